"""Model loaders shared by stages (CLIP today; captioners and VLMs load through their own modules)."""
