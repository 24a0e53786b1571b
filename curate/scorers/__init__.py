"""Model stages that add scores to rows (CLIP image-text similarity, ...); decisions live in curate.filters."""
