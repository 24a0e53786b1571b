"""curate: build multimodal pre-training datasets you can trust.

Importing curate is cheap; Ray, torch and img2dataset are imported only by the modules that need them.
"""
import os as _os

# img2dataset imports albumentations, which phones home for updates on import; curate runs offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Ray reports usage statistics to its developers unless told not to; curate sends nothing anywhere.
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__version__ = "0.1.0"
