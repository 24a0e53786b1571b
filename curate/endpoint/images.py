"""Images as data URLs inside chat messages, the form vLLM, SGLang and OpenAI accept inline."""
from __future__ import annotations

import base64

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
          (b"BM", "image/bmp"))


def mime_type(data: bytes) -> str:
    """MIME type of encoded image bytes from their magic number (PIL for anything unusual)."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    from curate import images

    with images.open_checked(data) as im:  # header only; raises ImageError on bytes that are not an image
        fmt = (im.format or "").lower()
    if not fmt:
        raise ValueError("unknown image format")
    return f"image/{fmt}"


def data_url(data: bytes, mime: str | None = None) -> str:
    """`data:<mime>;base64,<...>` for encoded image bytes (the bytes are sent as they are, not re-encoded)."""
    return f"data:{mime or mime_type(data)};base64,{base64.b64encode(data).decode('ascii')}"


def image_part(data: bytes) -> dict:
    """One `image_url` content part of a user message."""
    return {"type": "image_url", "image_url": {"url": data_url(data)}}


def user_message(text: str, images: list[bytes] = ()) -> dict:
    """A user turn with the images first, then the text (the order most VLM chat templates expect)."""
    return {"role": "user", "content": [*(image_part(b) for b in images), {"type": "text", "text": text}]}
