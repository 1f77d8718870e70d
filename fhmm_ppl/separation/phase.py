"""A consistent phase for noise made of spectral lines (mains hum) before the waveforms are made.

A masked STFT ``g ⊙ Y`` borrows the mixture's phase. For a sinusoid that is wrong wherever the
speech dominates the phase of a bin its window's main lobe reaches, and at ``features.n_fft`` 1024
(16 kHz) a 50 Hz hum's harmonics blur into every bin between them. A few rounds of phase retrieval
(Griffin & Lim: keep the masked magnitude ``g |Y|``, take the phase of the STFT of the current
estimate's inverse STFT) give the hum an estimate whose frames agree with each other; the other
sources then share what it leaves of the mixture by their masks, so the estimates still sum to the
mixture. It pays only where the phased source's masked magnitudes are good and the mixture's
phase is not: a hum separated at n_fft 1024 gains, one separated at n_fft 2048 is level, and pink
noise, or every source phased (MISI), loses; so by default only the noise sources whose training
audio is mostly lines (``resolution.line_share``) take it (docs/separation.md, "A phase of its own
for hum"; figures in docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fhmm_ppl.audio.features import STFTConfig, istft, stft
from fhmm_ppl.separation.resolution import LINE_SHARE, line_share

#: Rounds of phase retrieval for the ``inference.phase_sources``' estimates (two gained most).
PHASE_ITERATIONS = 2


def line_sources(sources: Mapping[str, np.ndarray], config: STFTConfig) -> list[str]:
    """The names in ``sources`` (``{name: training audio (n_samples,)}``) whose training audio is
    mostly steady lines at ``config`` (``line_share`` above ``LINE_SHARE``)."""
    return [name for name, audio in sources.items() if line_share(audio, config) > LINE_SHARE]


def check_phased(options, names: Sequence[str]) -> None:
    """One-line ``ValueError`` where ``inference.phase_sources`` names a source not in ``names``
    (the separator's sources)."""
    missing = [n for n in options.inference.phase_sources or () if n not in names]
    if missing:
        raise ValueError(f"inference.phase_sources names {', '.join(missing)}, not one of the sources "
                         f"({', '.join(names)})")


def consistent_estimate(gain: np.ndarray, spec: np.ndarray, config: STFTConfig, length: int,
                        n_iter: int = PHASE_ITERATIONS) -> np.ndarray:
    """The waveform ``(length,)`` float32 of the masked magnitude ``gain (T, F) * |spec (T, F)|``
    after ``n_iter`` rounds of phase retrieval started from the mixture's phase."""
    magnitude = gain * np.abs(spec)
    estimate = gain * spec
    for _ in range(n_iter):
        rebuilt = stft(istft(estimate, config, length=length), config)
        estimate = magnitude * np.exp(1j * np.angle(rebuilt))
    return istft(estimate, config, length=length)


def waveforms(mixture: np.ndarray, spec: np.ndarray, gains: np.ndarray, config: STFTConfig,
              phased: Sequence[int] = ()) -> list[np.ndarray]:
    """Each source's estimate ``(n_samples,)`` float32 from its mask ``gains (K, T, F)`` on the
    mixture ``(n_samples,)`` and its STFT ``spec (T, F)``.

    The sources numbered in ``phased`` take ``consistent_estimate`` (all but the last where every
    source is named: what they leave must go somewhere); the others share the rest of the mixture by
    their masks, renormalised among themselves, the last taking what the others leave, so that the
    estimates sum to the mixture. With none phased, masks that sum to one split the mixture the
    same way (one inverse STFT fewer); other masks each make their own estimate.
    """
    n = mixture.shape[0]
    phased = sorted(set(phased))[: len(gains) - 1]
    if not phased and not np.allclose(gains.sum(axis=0), 1.0, atol=1e-5):
        return [istft(g * spec, config, length=n) for g in gains]
    waves = {k: consistent_estimate(gains[k], spec, config, n) for k in phased}
    others = [k for k in range(len(gains)) if k not in waves]
    rest, rest_spec, shares = mixture, spec, gains[others]
    if waves:
        rest = (mixture - np.sum(list(waves.values()), axis=0)).astype(np.float32)
        rest_spec = stft(rest, config) if len(others) > 1 else None
        total = np.sum(shares, axis=0)
        shares = shares / np.where(total > 0, total, 1.0)
    for k, share in zip(others[:-1], shares[:-1]):
        waves[k] = istft(share * rest_spec, config, length=n)
    waves[others[-1]] = (rest - np.sum([waves[k] for k in others[:-1]], axis=0)).astype(np.float32)
    return [waves[k] for k in range(len(gains))]
