"""Padding variable-length sequences into one batch with static, bucketed shapes."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bucket_length(n_frames: int, bucket: int = 256) -> int:
    """Round ``n_frames`` up to a multiple of ``bucket`` so new lengths rarely trigger a new compile."""
    return int(-(-n_frames // bucket) * bucket) if bucket > 1 else int(n_frames)


def pad_sequences(sequences: Sequence[np.ndarray], bucket: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences ``(T_b, D)`` into ``(B, T_max, D)`` with zeros after each length.

    Returns:
        ``(batch (B, T_pad, D) float32, lengths (B,) int32)``.

    Raises:
        ValueError: no sequences, an empty one, mismatched feature sizes, or non-finite values.
    """
    if len(sequences) == 0:
        raise ValueError("no training sequences were given")
    arrays = [np.asarray(s, dtype=np.float32) for s in sequences]
    dims = {a.shape[1] if a.ndim == 2 else None for a in arrays}
    if None in dims or len(dims) != 1:
        raise ValueError(f"every sequence must be 2-D (T, D) with the same D; got shapes {[a.shape for a in arrays]}")
    for i, a in enumerate(arrays):
        if a.shape[0] == 0:
            raise ValueError(f"sequence {i} has no frames")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"sequence {i} contains NaN or infinite values")
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int32)
    padded = np.zeros((len(arrays), bucket_length(int(lengths.max()), bucket), arrays[0].shape[1]), np.float32)
    for i, a in enumerate(arrays):
        padded[i, : a.shape[0]] = a
    return padded, lengths
