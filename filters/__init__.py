"""Cheap per-row decisions (thresholds, heuristics), importable as `curate.filters`.

`curate.stage.load_builtin_steps` imports every module here, which registers each filter under its
recipe name; adding a filter is adding a module.
"""
