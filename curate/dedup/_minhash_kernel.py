"""Compiled (numba) kernels for `minhash_dedup`'s hot loops: word n-gram shingle hashes and MinHash signatures.
(A private module: the step registry imports every public module of curate.dedup, and numba costs ~1.5 s to
import, so only a run that hashes shingles pays for it.)

In Python, shingling and hashing cost ~60% of the job (a `set` of n-grams, `encode`, `sha1`, `digest` and
`unpack` per shingle: ~5 us per caption-shingle); the signature loop builds a (shingles x num_perm) array.
Here both run over one UTF-8 buffer of all texts, with the same results bit for bit:

- `word_shingle_sets`: each text's word n-grams are byte ranges of its UTF-8 encoding (normalised text has
  single spaces and no edges, as `shingles` splits it); each range is hashed with SHA-1 implemented here
  (datasketch's `sha1_hash32`: the digest's first 4 bytes as a little-endian uint32), and each row keeps its
  distinct hashes sorted. That is the set `shingle_hashes` + `sketches` see (a 32-bit collision between two
  distinct n-grams counts once in both);
- `signatures_of_sets`: datasketch's affine32 MinHash of those hashes (uint32 wrap-around arithmetic, as the
  numpy version), one row at a time, no temporary arrays.

tests/dedup/test_minhash_inprocess.py checks both against hashlib / the Python path / datasketch. Compiled on
first use and cached next to this file (numba's `cache=True`; the first call in a fresh install takes a few
seconds).
"""
from __future__ import annotations

import numpy as np
from numba import njit

_M32 = np.uint64(0xFFFFFFFF)
_K = (np.uint64(0x5A827999), np.uint64(0x6ED9EBA1), np.uint64(0x8F1BBCDC), np.uint64(0xCA62C1D6))
_H = (np.uint64(0x67452301), np.uint64(0xEFCDAB89), np.uint64(0x98BADCFE), np.uint64(0x10325476),
      np.uint64(0xC3D2E1F0))
_U1, _U2, _U5, _U8, _U16, _U24, _U27, _U30, _U31 = (np.uint64(x) for x in (1, 2, 5, 8, 16, 24, 27, 30, 31))
_FF = np.uint64(0xFF)
# (all arithmetic in uint64, masked to 32 bits: numba widens uint32 products and mixes signed types to float)


@njit(cache=True)
def _sha1_32(buf, start, end, w):
    """First 4 bytes of SHA-1(buf[start:end]) as a little-endian uint32 (datasketch.hashfunc.sha1_hash32)."""
    h0, h1, h2, h3, h4 = _H
    length = end - start
    nblocks = (length + 8) // 64 + 1
    total = nblocks * 64
    bits = np.uint64(length) * _U8
    for blk in range(nblocks):
        for t in range(16):
            word = np.uint64(0)
            for q in range(4):
                pos = blk * 64 + t * 4 + q
                if pos < length:
                    byte = np.uint64(buf[start + pos])
                elif pos == length:
                    byte = np.uint64(0x80)
                elif pos >= total - 8:
                    byte = (bits >> np.uint64(8 * (total - 1 - pos))) & _FF
                else:
                    byte = np.uint64(0)
                word = (word << _U8) | byte
            w[t] = word
        for t in range(16, 80):
            x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]
            w[t] = ((x << _U1) | (x >> _U31)) & _M32
        a, b, c, d, e = h0, h1, h2, h3, h4
        for t in range(80):
            if t < 20:
                f = (b & c) | ((b ^ _M32) & d)
                k = _K[0]
            elif t < 40:
                f = b ^ c ^ d
                k = _K[1]
            elif t < 60:
                f = (b & c) | (b & d) | (c & d)
                k = _K[2]
            else:
                f = b ^ c ^ d
                k = _K[3]
            tmp = ((((a << _U5) | (a >> _U27)) & _M32) + f + e + k + w[t]) & _M32
            e = d
            d = c
            c = ((b << _U30) | (b >> _U2)) & _M32
            b = a
            a = tmp
        h0 = (h0 + a) & _M32
        h1 = (h1 + b) & _M32
        h2 = (h2 + c) & _M32
        h3 = (h3 + d) & _M32
        h4 = (h4 + e) & _M32
    # digest bytes 0..3 are h0 big-endian; read little-endian: byte-swap
    return (((h0 >> _U24) & _FF) | (((h0 >> _U16) & _FF) << _U8) | (((h0 >> _U8) & _FF) << _U16)
            | ((h0 & _FF) << _U24))


@njit(cache=True, nogil=True)
def _word_sets(buf, offsets, n):
    rows = len(offsets) - 1
    out = np.empty(len(buf) + rows, np.uint32)  # a text of T words has at most max(1, T - n + 1) <= bytes shingles
    out_off = np.zeros(rows + 1, np.int64)
    w = np.empty(80, np.uint64)
    starts = np.empty(len(buf) + 1, np.int64)
    ends = np.empty(len(buf) + 1, np.int64)
    pos = 0
    for r in range(rows):
        lo, hi = offsets[r], offsets[r + 1]
        if hi > lo:
            # word boundaries: texts are normalised (single spaces, none at the edges)
            t = 0
            starts[0] = lo
            for i in range(lo, hi):
                if buf[i] == 32:
                    ends[t] = i
                    t += 1
                    starts[t] = i + 1
            ends[t] = hi
            t += 1
            first = pos
            if t <= n:
                out[pos] = _sha1_32(buf, lo, hi, w)
                pos += 1
            else:
                for g in range(t - n + 1):
                    out[pos] = _sha1_32(buf, starts[g], ends[g + n - 1], w)
                    pos += 1
            seg = np.sort(out[first:pos])
            k = 0
            for i in range(len(seg)):
                if i == 0 or seg[i] != seg[i - 1]:
                    out[first + k] = seg[i]
                    k += 1
            pos = first + k
        out_off[r + 1] = pos
    return out[:pos].copy(), out_off


@njit(cache=True)
def _normalise(buf, offsets, raw):
    """Rows with raw[r]: ASCII text normalised as `normalise_text` does (lower case; every byte but
    [A-Za-z0-9_] a separator, which is what its translate + split does to ASCII; single spaces, none at the
    edges). Other rows are already normalised (non-ASCII text, done in Python) and are copied. Returns the
    new buffer, its offsets and each row's length in characters (UTF-8 lead bytes)."""
    rows = len(offsets) - 1
    out = np.empty(len(buf), np.uint8)
    out_off = np.zeros(rows + 1, np.int64)
    chars = np.zeros(rows, np.int64)
    pos = 0
    for r in range(rows):
        lo, hi = offsets[r], offsets[r + 1]
        start = pos
        if raw[r]:
            gap = False
            for i in range(lo, hi):
                c = buf[i]
                if 65 <= c <= 90:
                    c += 32
                if (97 <= c <= 122) or (48 <= c <= 57) or c == 95:
                    if gap and pos > start:
                        out[pos] = 32
                        pos += 1
                    gap = False
                    out[pos] = c
                    pos += 1
                else:
                    gap = True
            chars[r] = pos - start
        else:
            k = 0
            for i in range(lo, hi):
                out[pos] = buf[i]
                pos += 1
                if (buf[i] & 0xC0) != 0x80:
                    k += 1
            chars[r] = k
        out_off[r + 1] = pos
    return out[:pos], out_off, chars


def normalised_buffer(texts, max_chars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTF-8 buffer, offsets, lengths in characters) of `normalise_text(t[:max_chars])` for every value of
    an Arrow string array, with no Python per ASCII row: their bytes go to `_normalise` as they lie in the
    array; only non-ASCII rows (NFKC and Unicode classes) go through Python. Nulls are empty texts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.dedup.minhash import normalise_text

    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):  # decode as normalise_text does
        arr = pa.array([None if b is None else b.decode("utf-8", "replace") for b in arr.to_pylist()], pa.string())
    arr = pc.fill_null(pc.utf8_slice_codeunits(arr.cast(pa.large_string()), 0, max_chars), "")
    ascii_ = pc.string_is_ascii(arr)
    odd = np.flatnonzero(~ascii_.to_numpy(zero_copy_only=False))
    if len(odd):
        done = pa.array([normalise_text(t) for t in arr.take(pa.array(odd)).to_pylist()], pa.large_string())
        arr = pc.replace_with_mask(arr, pc.invert(ascii_), done)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    offs = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    return _normalise(data, offs, ascii_.to_numpy(zero_copy_only=False))


def _by_rows(kernel, data: np.ndarray, offsets: np.ndarray, threads: int, *args) -> list:
    """`kernel(data, offsets, *args)` over `threads` row ranges of a CSR input at once (the kernels release
    the GIL), cut where the data splits evenly; one call below 20k rows. Each range's result is what the
    whole call gives for those rows, so concatenating them is the whole call's result."""
    rows = len(offsets) - 1
    if threads <= 1 or rows < 20_000:
        return [kernel(data, offsets, *args)]
    cuts = np.unique(np.searchsorted(offsets, np.linspace(offsets[0], offsets[-1], threads + 1)).clip(0, rows))
    cuts[0], cuts[-1] = 0, rows
    ranges = [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(ranges)) as pool:
        return list(pool.map(lambda r: kernel(data[offsets[r[0]]:offsets[r[1]]],
                                              offsets[r[0]:r[1] + 1] - offsets[r[0]], *args), ranges))


def word_sets_of_buffer(buf: np.ndarray, offsets: np.ndarray, n: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`word_shingle_sets` of texts already normalised into one UTF-8 buffer (`normalised_buffer`), on up
    to `threads` cores."""
    parts = _by_rows(_word_sets, buf, offsets, threads, n)
    if len(parts) == 1:
        return parts[0]
    ends = np.cumsum([0] + [p[1][-1] for p in parts[:-1]])
    return (np.concatenate([p[0] for p in parts]),
            np.concatenate([[0]] + [p[1][1:] + e for p, e in zip(parts, ends)]).astype(np.int64))


def word_shingle_sets(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per normalised text: its distinct word-n-gram hashes, sorted (CSR: values, offsets)."""
    enc = [t.encode("utf-8", "surrogatepass") for t in texts]
    offsets = np.zeros(len(enc) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, enc), np.int64, len(enc)), out=offsets[1:])
    buf = np.frombuffer(b"".join(enc), np.uint8)
    return _word_sets(buf, offsets, n)


@njit(cache=True)
def _row_min(values, start, end, a, b, cur):
    """cur[p] = min over values[start:end] of the p-th affine32 hash of the value's murmur3 finaliser
    (cur is set to 2**32-1 first): one row's MinHash, shared by both kernels below."""
    m1, m2 = np.uint64(0x85EBCA6B), np.uint64(0xC2B2AE35)
    s13, s16 = np.uint64(13), np.uint64(16)
    cur[:] = _M32
    for s in range(start, end):
        h = np.uint64(values[s])
        h ^= h >> s16
        h = (h * m1) & _M32
        h ^= h >> s13
        h = (h * m2) & _M32
        h ^= h >> s16
        for p in range(len(a)):
            v = (a[p] * h + b[p]) & _M32
            if v < cur[p]:
                cur[p] = v


@njit(cache=True)
def _signatures(values, offsets, a, b):
    rows, perms = len(offsets) - 1, len(a)
    out = np.full((rows, perms), np.uint32(0xFFFFFFFF), np.uint32)
    cur = np.empty(perms, np.uint64)
    for r in range(rows):
        if offsets[r + 1] == offsets[r]:
            continue
        _row_min(values, offsets[r], offsets[r + 1], a, b, cur)
        for p in range(perms):
            out[r, p] = np.uint32(cur[p])
    return out


def signatures_of_sets(values: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(rows, num_perm) uint32 affine32 MinHash signatures of CSR hash sets (empty rows: all 2**32-1)."""
    return _signatures(values, offsets, a.astype(np.uint64), b.astype(np.uint64))


@njit(cache=True, nogil=True)
def _band_keys(values, offsets, a, b, bands, rows):
    n, perms = len(offsets) - 1, len(a)
    out = np.empty((n, bands), np.uint64)
    cur = np.empty(perms, np.uint64)
    s33 = np.uint64(33)
    fnv, gold, prime, mix = (np.uint64(0xCBF29CE484222325), np.uint64(0x9E3779B97F4A7C15),
                             np.uint64(0x100000001B3), np.uint64(0xFF51AFD7ED558CCD))
    for r in range(n):
        _row_min(values, offsets[r], offsets[r + 1], a, b, cur)
        for band in range(bands):
            k = fnv ^ (np.uint64(band + 1) * gold)
            for q in range(band * rows, (band + 1) * rows):
                k = (k ^ cur[q]) * prime
            k ^= k >> s33
            k *= mix
            k ^= k >> s33
            out[r, band] = k
    return out


def band_keys_of_sets(values: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray,
                      bands: int, rows: int, threads: int = 1) -> np.ndarray:
    """(rows, bands) int64 LSH band keys of CSR hash sets, equal to `minhash.band_keys(signatures)`, without
    materialising the (rows x num_perm) signatures (512 MB at 1M rows); on up to `threads` cores."""
    parts = _by_rows(_band_keys, values, offsets, threads, a.astype(np.uint64), b.astype(np.uint64), bands, rows)
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)).view(np.int64)
