"""Readers, the shard writer and the run directory: everything that touches files."""
