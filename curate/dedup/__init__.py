"""Deduplication jobs: exact hashes now; MinHash LSH and perceptual/embedding near-dups build on the same Job shape."""
