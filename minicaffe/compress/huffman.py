"""Canonical Huffman coding of small alphabets (at most 256 symbols), vectorized with NumPy/Numba."""
import heapq

import numba as nb
import numpy as np

MAX_LEN = 24


def code_lengths(counts):
    """Huffman code length per symbol (0 for unused ones)."""
    used = [(int(c), i) for i, c in enumerate(counts) if c > 0]
    lengths = np.zeros(len(counts), np.uint8)
    if len(used) == 1:
        lengths[used[0][1]] = 1
        return lengths
    heap = [(c, i, (s,)) for i, (c, s) in enumerate(used)]
    heapq.heapify(heap)
    uid = len(heap)
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, uid, a + b))
        uid += 1
    if lengths.max() > MAX_LEN:     # pathological skew: fall back to fixed-length codes
        bits = max(1, int(np.ceil(np.log2(len(used)))))
        lengths[[s for _, s in used]] = bits
    return lengths


def canonical_codes(lengths):
    codes = np.zeros(len(lengths), np.uint32)
    code, prev = 0, 0
    for length, sym in sorted((int(l), s) for s, l in enumerate(lengths) if l):
        code <<= length - prev
        codes[sym] = code
        code += 1
        prev = length
    return codes


def encode(symbols, lengths):
    """Bytes of the concatenated codes, most significant bit first."""
    if not len(symbols):
        return b""
    codes = canonical_codes(lengths)
    ls = lengths[symbols].astype(np.int64)
    total = int(ls.sum())
    bits = np.zeros(total, np.uint8)
    starts = np.concatenate([[0], np.cumsum(ls)[:-1]])
    for k in range(1, int(ls.max()) + 1):   # bit k of each code (loop over code length, not symbols)
        sel = ls >= k
        shift = (ls[sel] - k).astype(np.uint32)
        bits[starts[sel] + k - 1] = (codes[symbols[sel]] >> shift) & 1
    return np.packbits(bits).tobytes()


@nb.njit(cache=True)
def _decode(data, n, first_code, first_index, count, symbols_by_code):
    out = np.empty(n, np.int32)
    pos = 0
    nbits = data.size * 8
    for i in range(n):
        code = 0
        length = 0
        while True:
            if pos >= nbits:
                return out, -1
            code = (code << 1) | ((data[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
            length += 1
            if length > 24:
                return out, -1
            if count[length] and code - first_code[length] < count[length] and code >= first_code[length]:
                out[i] = symbols_by_code[first_index[length] + code - first_code[length]]
                break
    return out, pos


def decode(data, n, lengths):
    """n symbols back from `data`; None when the stream is too short or not a valid code."""
    if n == 0:
        return np.zeros(0, np.int32)
    lengths = np.asarray(lengths, np.int64)
    order = sorted((int(l), s) for s, l in enumerate(lengths) if l)
    if not order:
        return None
    count = np.zeros(MAX_LEN + 2, np.int64)
    for l, _ in order:
        count[l] += 1
    first_code = np.zeros(MAX_LEN + 2, np.int64)
    first_index = np.zeros(MAX_LEN + 2, np.int64)
    code = idx = 0
    for l in range(1, MAX_LEN + 1):
        code = (code + count[l - 1]) << 1 if l > 1 else 0
        first_code[l] = code
        first_index[l] = idx
        idx += count[l]
    syms = np.array([s for _, s in order], np.int32)
    out, pos = _decode(np.frombuffer(data, np.uint8), n, first_code, first_index, count, syms)
    return None if pos < 0 else out
