"""Video-text curation: download and probe videos, cut them into clips with their own rows, keyframes,
motion and CLIP scores, clip-level dedup. Step modules here register themselves (see curate.stage)."""
