"""What can go wrong talking to a chat-completions server, as a small set of stable reason codes.

Callers turn a code into their own public reason code by prefixing it (`mllm_timeout`,
`recaption_timeout`), so one taxonomy serves every stage that uses the client.
"""
from __future__ import annotations

# code -> one-line description (stages prefix these when they declare their own reasons)
REASONS: dict[str, str] = {
    "http_error": "the server answered an HTTP error that is not worth retrying (4xx), or kept answering 5xx",
    "rate_limited": "the server kept answering 429 Too Many Requests after every retry",
    "timeout": "no complete answer within timeout_s, on every try",
    "connection_error": "could not connect to the server (refused, reset, DNS), on every try",
    "bad_response": "the answer was not a chat-completions JSON object (malformed JSON, no choices)",
}

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def status_reason(status: int) -> str:
    """Reason code for a final HTTP error status."""
    return "rate_limited" if status == 429 else "http_error"


def prefixed(prefix: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The taxonomy as a stage's declared reasons, e.g. prefixed("mllm") -> {"mllm_timeout": ...}."""
    out = {f"{prefix}_{code}": doc for code, doc in REASONS.items()}
    out.update(extra or {})
    return out


class EndpointError(Exception):
    """A request that failed for good; `reason` is a code from REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
