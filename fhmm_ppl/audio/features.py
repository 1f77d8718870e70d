"""Time-frequency features through librosa, frames first: ``(T, F)``.

STFT / iSTFT (complex, for Wiener-style separation), log-mel and MFCC (for
Gaussian emissions and classification), and feature normalisation fitted on
training data only (scikit-learn scalers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Optional

import librosa
import numpy as np
from sklearn.preprocessing import MinMaxScaler, StandardScaler


@dataclass(frozen=True)
class STFTConfig:
    """STFT settings shared by analysis and synthesis.

    Attributes:
        n_fft: frame length in samples (F = n_fft // 2 + 1 bins).
        hop_length: hop in samples.
        window: window name understood by scipy / librosa.
    """

    n_fft: int = 512
    hop_length: int = 128
    window: str = "hann"

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.hop_length < 1 or self.hop_length > self.n_fft:
            raise ValueError(f"need n_fft >= 16 and 1 <= hop_length <= n_fft, got {self.n_fft}, {self.hop_length}")

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


def stft(signal: np.ndarray, config: STFTConfig = STFTConfig()) -> np.ndarray:
    """Complex STFT of ``(n_samples,)`` -> ``(T, F)`` complex64 (centred frames)."""
    spec = librosa.stft(np.asarray(signal, np.float32), n_fft=config.n_fft, hop_length=config.hop_length, window=config.window)
    return np.ascontiguousarray(spec.T)


def istft(spec: np.ndarray, config: STFTConfig = STFTConfig(), length: Optional[int] = None) -> np.ndarray:
    """Inverse of ``stft``: ``(T, F)`` complex -> ``(length,)`` float32."""
    return librosa.istft(np.asarray(spec).T, hop_length=config.hop_length, n_fft=config.n_fft,
                         window=config.window, length=length).astype(np.float32)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Mel filterbank ``(n_mels, n_fft // 2 + 1)`` float32 (librosa's Slaney-normalised triangles);
    cached and read-only, shared by log-mel features and the log-mel separator."""
    filters = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)
    filters.flags.writeable = False
    return filters


def log_mel(signal: np.ndarray, sample_rate: int, config: STFTConfig = STFTConfig(), n_mels: int = 40) -> np.ndarray:
    """Log mel power spectrogram ``(T, n_mels)`` in dB (``librosa.power_to_db``: ``10 log10``, at most
    80 dB below the recording's loudest band)."""
    power = np.abs(stft(signal, config)) ** 2
    mel = power @ mel_filterbank(sample_rate, config.n_fft, n_mels).T
    return np.ascontiguousarray(librosa.power_to_db(mel, ref=1.0, amin=1e-10), dtype=np.float32)


def mfcc(signal: np.ndarray, sample_rate: int, config: STFTConfig = STFTConfig(), n_mfcc: int = 40, n_mels: int = 64) -> np.ndarray:
    """MFCCs ``(T, n_mfcc)`` (40 coefficients by default, as the original study)."""
    coeffs = librosa.feature.mfcc(y=np.asarray(signal, np.float32), sr=sample_rate, n_mfcc=n_mfcc, n_fft=config.n_fft,
                                  hop_length=config.hop_length, window=config.window, n_mels=n_mels)
    return np.ascontiguousarray(coeffs.T)


class Normalizer:
    """Feature scaling fitted on training frames only, applied to any frames.

    Args:
        kind: ``"standard"`` (zero mean, unit variance), ``"minmax"`` ([0, 1]) or ``"none"``.
    """

    def __init__(self, kind: Literal["standard", "minmax", "none"] = "standard") -> None:
        if kind not in ("standard", "minmax", "none"):
            raise ValueError(f"normalisation must be 'standard', 'minmax' or 'none', got {kind!r}")
        self.kind = kind
        self._scaler = None

    def fit(self, frames: np.ndarray) -> "Normalizer":
        """Fit on training frames ``(M, D)``."""
        if self.kind != "none":
            self._scaler = (StandardScaler() if self.kind == "standard" else MinMaxScaler()).fit(np.asarray(frames))
        return self

    def transform(self, frames: np.ndarray) -> np.ndarray:
        """Scale ``(M, D)`` frames with the statistics from ``fit``."""
        if self.kind == "none":
            return np.asarray(frames, np.float32)
        if self._scaler is None:
            raise RuntimeError("Normalizer.transform called before fit")
        return self._scaler.transform(np.asarray(frames)).astype(np.float32)
