"""Shipped YAML recipes (package data): `curate run image_text` finds pipelines/image_text.yaml."""
