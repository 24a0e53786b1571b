"""Validation loop: train and evaluate small open_clip models on a run's shards.

Importing `curate.train.configs` registers the package's tiny model configs with open_clip.
"""
