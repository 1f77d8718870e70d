"""Pitch warps: each frame's speech dictionaries shifted in frequency by the factor that fits it best.

A state's dictionary holds the spectra its training frames had, at the pitches the talker used
there; the same vowel a little higher puts every harmonic a little off its columns' peaks. Here the
speech's columns also come warped, ``w_a(f) = w(f / a)`` for ``a`` a few quarter tones either way
(``inference.pitch_shifts`` each way), and each frame keeps the one warp whose joint fit with the
noise leaves the smallest KL divergence (``state_nmf``: a few activation updates per warp choose,
the chosen warp takes the rest).

It pays only where the noise model is exact enough that a better fit means a better speech fit:
steady noise. On real talkers it gained 0.3 dB against a hum and 0.1 against pink noise, and lost
about 0.1 against recorded dishes, the exercise bike and babble (docs/benchmarks.md, "Pitch
warps"), so ``fit_separator`` turns it on (``AUTO_SHIFTS``) only where every noise source's
training audio is steady: the median over bins of the spread of its log power across frames below
``STEADY_SPREAD_DB``. A stationary Gaussian noise spreads by ``10 pi / (ln 10 sqrt 6)`` = 5.57 dB
(the log of an exponential variable); pink noise and hums measure 5.5-5.6, the exercise bike 5.7,
babble, dishes and modulated brown noise 8.6-9.2.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fhmm_ppl.audio.features import STFTConfig, stft

#: Neighbouring warps are a quarter tone apart.
WARP_STEP = 2.0 ** (1.0 / 24.0)
#: ``inference.pitch_shifts`` that ``fit_separator`` chooses where the noise is steady.
AUTO_SHIFTS = 2
#: Noise is steady where the median over bins of its log power's spread across frames is below this.
STEADY_SPREAD_DB = 6.0
_TINY = 1e-9


def warp_factors(shifts: int) -> np.ndarray:
    """``(2 shifts + 1,)`` frequency factors ``WARP_STEP^k``, ``k = -shifts .. shifts`` (1 in the middle)."""
    return WARP_STEP ** np.arange(-int(shifts), int(shifts) + 1, dtype=np.float64)


def warp_columns(columns, factors: tuple):
    """Spectra ``columns (..., F, n)`` warped in frequency, ``(A, ..., F, n)``: column ``w`` becomes
    ``w(f / a)`` for each factor ``a`` (linear interpolation between bins, zero past the last bin),
    scaled to sum to one again."""
    n_bins = columns.shape[-2]
    out = []
    for factor in factors:
        source = np.arange(n_bins) / float(factor)  # the bin each bin reads from
        low = np.minimum(np.floor(source).astype(int), n_bins - 1)
        frac = np.where(source > n_bins - 1, 0.0, source - low)[:, None].astype(np.float32)
        keep = (source <= n_bins - 1)[:, None].astype(np.float32)
        warped = (jnp.take(columns, low, axis=-2) * (1 - frac)
                  + jnp.take(columns, np.minimum(low + 1, n_bins - 1), axis=-2) * frac) * keep
        out.append(warped / (warped.sum(axis=-2, keepdims=True) + _TINY))
    return jnp.stack(out)


def log_power_spread(audio: np.ndarray, config: STFTConfig) -> float:
    """The median over bins of the standard deviation across frames of ``audio``'s log power (dB)."""
    power = np.abs(stft(np.asarray(audio, np.float32), config)).astype(np.float64) ** 2
    return float(np.median(np.std(10 * np.log10(power + _TINY), axis=0)))


def auto_shifts(noises: dict, config: STFTConfig) -> int:
    """``AUTO_SHIFTS`` where there is noise training audio (``{name: samples}``) and all of it is
    steady (``log_power_spread`` below ``STEADY_SPREAD_DB``), else 0."""
    steady = bool(noises) and all(log_power_spread(a, config) < STEADY_SPREAD_DB for a in noises.values())
    return AUTO_SHIFTS if steady else 0
