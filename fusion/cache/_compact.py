r"""The compact encoding of a cache's top-k rows (format 3, ``dtype="q8"``).

Per example, one zlib stream (level 9) of three planes, ``T`` rows of ``k`` entries:

1. per row, float32 ``hi`` (the row's largest log-probability, exact) and ``step``;
2. per entry, the uint8 code :math:`c = \mathrm{round}((hi - \ell) / step)`, where
   :math:`step = (hi - lo) / 255` and :math:`lo = \max(\ell_{(k)}, hi - 80)`;
3. the entries' vocabulary ids in *increasing* order, delta coded (first id, then the
   gaps) in the narrowest unsigned type that holds ``vocab_size - 1``, split into byte
   planes (most significant first) so that zlib sees the mostly-zero high bytes together.

Decoding gives :math:`\hat\ell = hi - c \cdot step` and sorts the entries back into
decreasing order (ties of equal codes by id).

What is lost, exactly: each log-probability moves by at most :math:`step / 2 =
(hi - lo)/510` nats (the largest is exact); entries more than 80 nats below the largest
(probability ratio :math:`e^{-80} \approx 2 \cdot 10^{-35}`) are raised to ``hi - 80``;
the order among entries whose codes are equal becomes the id order. The ids are exact.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

#: quantisation levels of a log-probability (uint8 codes 0..LEVELS)
LEVELS = 255
#: log-probabilities further than this below the row's largest are raised to it
FLOOR_NATS = 80.0
_ZLIB_LEVEL = 9


def index_dtype(bound: int) -> np.dtype:
    """The narrowest unsigned dtype that holds ``0 .. bound - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if bound - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"a vocabulary of {bound} ids does not fit uint32")


def quantise(logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(head (T, 2) float32 [hi, step], codes (T, k) uint8)`` of rows sorted decreasingly."""
    lp = logprobs.astype(np.float32)
    hi = lp[:, 0] if lp.shape[1] else np.zeros(lp.shape[0], np.float32)
    lo = np.maximum(lp[:, -1], hi - FLOOR_NATS) if lp.shape[1] else hi
    step = ((hi - lo) / LEVELS).astype(np.float32)
    safe = np.where(step > 0, step, np.float32(1.0))
    codes = np.clip(np.rint((hi[:, None] - lp) / safe[:, None]), 0, LEVELS).astype(np.uint8)
    return np.stack([hi, step], axis=1).astype(np.float32), codes


def encode_rows(logprobs: np.ndarray, indices: np.ndarray, vocab_size: int) -> bytes:
    """One example's ``(T, k)`` rows (sorted by decreasing log-probability) as a blob."""
    head, codes = quantise(logprobs)
    order = np.argsort(indices, axis=1, kind="stable")
    ids = np.take_along_axis(indices.astype(np.int64), order, axis=1)
    codes = np.take_along_axis(codes, order, axis=1)
    gaps = np.diff(ids, axis=1, prepend=0).astype(index_dtype(vocab_size).newbyteorder(">"))
    planes = gaps.view(np.uint8).reshape(*gaps.shape, gaps.itemsize).transpose(2, 0, 1)
    raw = head.astype("<f4").tobytes() + codes.tobytes() + np.ascontiguousarray(planes).tobytes()
    return zlib.compress(raw, _ZLIB_LEVEL)


def decode_rows(
    blob: bytes, rows: int, k: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logprobs float32, indices int32)`` of shape ``(rows, k)``, sorted decreasingly.

    Raises
    ------
    ValueError
        If the blob does not decompress to ``rows x k`` entries of this vocabulary.
    """
    dtype = index_dtype(vocab_size)
    try:
        raw = zlib.decompress(blob)
    except zlib.error as err:
        raise ValueError(f"undecodable compact rows ({err})") from None
    sizes = (rows * 2 * 4, rows * k, rows * k * dtype.itemsize)
    if len(raw) != sum(sizes):
        raise ValueError(f"compact rows hold {len(raw)} bytes, expected {sum(sizes)}")
    head = np.frombuffer(raw[: sizes[0]], dtype="<f4").reshape(rows, 2)
    codes = np.frombuffer(raw[sizes[0] : sizes[0] + sizes[1]], dtype=np.uint8).reshape(rows, k)
    planes = np.frombuffer(raw[sizes[0] + sizes[1] :], dtype=np.uint8)
    planes = planes.reshape(dtype.itemsize, rows, k).transpose(1, 2, 0)
    gaps = np.ascontiguousarray(planes).view(dtype.newbyteorder(">")).reshape(rows, k)
    ids = np.cumsum(gaps.astype(np.int64), axis=1)
    values = head[:, :1] - codes.astype(np.float32) * head[:, 1:]
    order = np.lexsort((ids, codes), axis=1) if k else np.zeros((rows, 0), np.int64)
    values = np.take_along_axis(values, order, axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    return torch.from_numpy(np.ascontiguousarray(values)), torch.from_numpy(ids.astype(np.int32))
