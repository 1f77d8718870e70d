"""The audio a separator takes: float32 mono samples, checked, with integer PCM scaled as soundfile reads it.

A bad mixture or stream chunk is a one-line ``ValueError`` saying what is wrong with it (not mono, not
audio, NaN or infinite samples, shorter than a frame), before any model sees it.
"""

from __future__ import annotations

import numpy as np


def as_float_audio(samples) -> np.ndarray:
    """Samples as float32; integer PCM (``int16`` from ``scipy.io.wavfile``, ...) is scaled to [-1, 1) as
    soundfile reads it, so a model trained on files read as floats sees the same levels."""
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        if info.min == 0:  # unsigned PCM (8-bit WAV) is centred on the middle of its range
            return ((samples.astype(np.float64) - (info.max + 1) / 2) / ((info.max + 1) / 2)).astype(np.float32)
        return (samples / float(-info.min)).astype(np.float32)
    return samples.astype(np.float32, copy=False)


def stream_chunk(chunk, number: int) -> np.ndarray:
    """Chunk ``number`` of a stream as float32 ``(n,)`` (``as_float_audio``), or a one-line error."""
    samples = np.asarray(chunk)
    if samples.dtype.kind not in "fiu":
        raise ValueError(f"stream chunk {number}: dtype {samples.dtype} is not audio; pass float or integer PCM samples")
    if samples.ndim != 1:
        raise ValueError(f"stream chunk {number} must be mono (n_samples,), got shape {samples.shape}")
    samples = as_float_audio(samples)
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"stream chunk {number} contains NaN or infinite samples")
    return samples


def checked_mixture(mixture, n_fft: int) -> np.ndarray:
    """A mixture as float32 ``(n_samples,)`` (``as_float_audio``), or a one-line error: not mono,
    NaN or infinite samples, shorter than one frame of ``n_fft`` samples."""
    mixture = as_float_audio(mixture)
    if mixture.ndim != 1:
        raise ValueError(f"mixture must be mono (n_samples,), got shape {mixture.shape}")
    if not np.all(np.isfinite(mixture)):
        raise ValueError("mixture contains NaN or infinite samples")
    if mixture.shape[0] < n_fft:
        raise ValueError(f"mixture has {mixture.shape[0]} samples, fewer than one frame ({n_fft})")
    return mixture
