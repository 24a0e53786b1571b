"""Example curate plugin: one custom filter (see filters.py and ../README.md)."""
