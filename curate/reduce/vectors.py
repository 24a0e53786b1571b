"""Embedding columns (list<float> per row) to an L2-normalised float32 matrix, without a Python loop per row
(`to_pylist` on 100k x 512 floats costs seconds; this is a gather over the Arrow buffers)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _as_list_array(column: pa.ChunkedArray | pa.Array) -> pa.ListArray:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if not pa.types.is_list(arr.type):
        raise ValueError(f"an embedding column holds lists of floats, not {arr.type}")
    if arr.type.value_type != pa.float32():
        arr = arr.cast(pa.list_(pa.float32()))
    return arr


def raw_vectors(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(indices of rows holding a vector of the column's most common length, float32 matrix of those rows)."""
    arr = _as_list_array(column)
    n = len(arr)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if n == 0 or not (lengths > 0).any():
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    dim = int(np.bincount(lengths[lengths > 0]).argmax())
    idx = np.flatnonzero(lengths == dim)
    # flatten() drops slice offsets and null rows (their length counts 0 here); a boolean mask over the values
    # keeps the rows of length `dim` without building an index per element
    flat = arr.flatten()
    if flat.null_count:
        flat = pc.fill_null(flat, np.nan)
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    x = values[np.repeat(lengths == dim, lengths)].reshape(len(idx), dim)
    return idx, x


def unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows that are finite and non-zero, those rows L2-normalised)."""
    if x.size == 0:
        return np.zeros(len(x), bool), x
    norm = np.linalg.norm(x, axis=1)
    ok = np.isfinite(x).all(axis=1) & (norm > 0)
    return ok, x[ok] / norm[ok, None]


def unit_vectors(table: pa.Table, column: str, text_column: str | None = None,
                 text_weight: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(row indices with a usable vector, unit matrix). With `text_column`, the image and text vectors are
    each normalised and joined as [sqrt(1-w) img, sqrt(w) txt], so a cosine between two joined vectors is
    (1-w) image cosine + w text cosine; rows need both vectors."""
    idx, x = raw_vectors(table.column(column))
    ok, x = unit_rows(x)
    idx = idx[ok]
    if text_column is None:
        return idx, x
    tidx, t = raw_vectors(table.column(text_column))
    tok, t = unit_rows(t)
    tidx = tidx[tok]
    both, xi, ti = np.intersect1d(idx, tidx, assume_unique=True, return_indices=True)
    joined = np.concatenate([np.sqrt(1 - text_weight) * x[xi], np.sqrt(text_weight) * t[ti]], axis=1)
    return both, joined.astype(np.float32, copy=False)
