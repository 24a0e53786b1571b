"""Whole-dataset balancing jobs (MetaCLIP-style concept balancing), importable as `curate.balance`.

`curate.stage.load_builtin_steps` imports every module here, which registers each job under its
recipe name.
"""
