"""Model stages that add score columns (CLIP score, MLLM score, ...); they never decide (decisions live in curate.filters)."""
