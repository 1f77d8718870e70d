"""The log-mel emission: the log-max model on log mel-band magnitudes.

Fewer dimensions than log-magnitude bins (``n_mels`` against ``n_fft / 2 + 1``), so training and
the joint log-likelihood are cheaper; band masks are spread back to STFT bins through the mel
filters. Its states get NMF dictionaries by default (``state_components``).
"""

from __future__ import annotations

import numpy as np

from fhmm_ppl.audio.features import mel_filterbank
from fhmm_ppl.separation.emissions.base import LOG_FLOOR
from fhmm_ppl.separation.emissions.logmax import LogMax


class LogMel(LogMax):
    """Log mel-band magnitudes ``(T, n_mels)``; blended masks, 8-spectrum state dictionaries."""

    name = "log_mel"
    soft_masks = ("blend", "dominance", "wiener")
    state_components = 8
    refine_iter = 3

    def __init__(self, features, sample_rate: int) -> None:
        super().__init__(features, sample_rate)
        self.filters = mel_filterbank(sample_rate, features.n_fft, features.n_mels)  # (n_mels, F)
        # each bin takes the filter-weighted average of the bands covering it (a convex combination, so
        # masks that sum to one over sources still do); bins no filter covers (DC) average all bands
        weights = self.filters.astype(np.float64) + 1e-12
        self.band_to_bin = (weights / weights.sum(axis=0, keepdims=True))  # (n_mels, F), columns sum to one

    def frames(self, spectrum: np.ndarray) -> np.ndarray:
        mel_power = (np.abs(spectrum) ** 2) @ self.filters.T
        return (0.5 * np.log(mel_power + LOG_FLOOR**2)).astype(np.float32)

    def spread(self, masks: np.ndarray) -> np.ndarray:
        return (np.asarray(masks) @ self.band_to_bin).astype(np.float32)
