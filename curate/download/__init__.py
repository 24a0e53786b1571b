"""Downloaders: fetch the bytes a URL list points at and turn every failure into a reason code."""
