"""Pitch warps: each frame's speech dictionaries shifted in frequency by the factor that fits it best.

A state's dictionary holds the spectra its training frames had, at the pitches the talker used
there; the same vowel a little higher puts every harmonic a little off its columns' peaks. Here the
speech's columns also come warped, ``w_a(f) = w(f / a)`` for ``a`` a few quarter tones either way
(``inference.pitch_shifts`` each way), and each frame keeps, for each talker, the one warp whose
joint fit with the other sources leaves the smallest KL divergence (``state_nmf``: a few activation
updates per warp choose, one talker after another, and the chosen warps take the rest).

Against noise it pays only where the noise model is exact enough that a better fit means a better
speech fit: steady noise. On real talkers it gained 0.3 dB against a hum and 0.1 against pink
noise, and lost about 0.1 against recorded dishes, the exercise bike and babble (docs/benchmarks.md,
"Pitch warps"), so ``fit_separator`` turns it on (``AUTO_SHIFTS``) only where every noise source's
training audio is steady (``steadiness``): each bin's log power spreads across frames as a
stationary noise's does, ``10 pi / (ln 10 sqrt 6)`` = 5.57 dB for a Gaussian one (the log of an
exponential variable; pink noise 5.56, hums 2.6-5.5, their lines steadier still; babble, dishes
and modulated brown noise 8.6-9.7), and its broadband level holds (standard deviation across frames: pink noise and hums
1.1-1.3 dB, the exercise bike, which swells with each pedal stroke, 2.4, babble 2.3-2.7). Where no
source is noise (talkers against each other) every source takes its own warp per frame: on twelve
real talker pairs that gained 0.37 dB (docs/benchmarks.md, "Pitch warps for talker pairs").
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fhmm_ppl.audio.features import STFTConfig, stft

#: Neighbouring warps are a quarter tone apart.
WARP_STEP = 2.0 ** (1.0 / 24.0)
#: ``inference.pitch_shifts`` that ``fit_separator`` chooses where the noise is steady or there is none.
AUTO_SHIFTS = 2
#: Noise is steady where the median over bins of its log power's spread across frames is below
#: ``STEADY_SPREAD_DB`` and its broadband level's standard deviation across frames below
#: ``STEADY_LEVEL_DB``; the bins counted are those within ``HELD_DB`` of its strongest.
STEADY_SPREAD_DB = 6.0
STEADY_LEVEL_DB = 2.0
HELD_DB = 30.0
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


def steadiness(audio: np.ndarray, config: STFTConfig) -> tuple[float, float]:
    """``audio``'s ``(spread, level swing)`` in dB: the median over the bins that hold it (long-term
    power within ``HELD_DB`` of its strongest bin) of the standard deviation across frames of each
    bin's log power, and the standard deviation across frames of its broadband level."""
    power = np.abs(stft(np.asarray(audio, np.float32), config)).astype(np.float64) ** 2
    long_term = power.mean(axis=0)
    held = long_term >= long_term.max() * 10 ** (-HELD_DB / 10)
    spread = np.median(np.std(10 * np.log10(power[:, held] + _TINY), axis=0))
    return float(spread), float(np.std(10 * np.log10(power.sum(axis=1) + _TINY)))


def auto_shifts(noises: dict, config: STFTConfig, unknown: bool = False) -> int:
    """``AUTO_SHIFTS`` where all noise training audio (``{name: samples}``) is steady (``steadiness``
    under ``STEADY_SPREAD_DB`` and ``STEADY_LEVEL_DB``) or there is none and nothing is ``unknown``
    (learnt on the mixture: trained talkers only), else 0."""
    def steady(audio) -> bool:
        spread, swing = steadiness(audio, config)
        return spread < STEADY_SPREAD_DB and swing < STEADY_LEVEL_DB

    if not noises:
        return 0 if unknown else AUTO_SHIFTS
    return AUTO_SHIFTS if all(steady(a) for a in noises.values()) else 0
