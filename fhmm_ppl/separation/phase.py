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
audio is mostly lines (``resolution.line_sources``) take it (docs/separation.md, "A phase of its own
for hum"; figures in docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from fhmm_ppl.audio.features import STFTConfig, istft, stft
from fhmm_ppl.separation.framing import Framer, OverlapAdd
from fhmm_ppl.settings import check_named

#: Rounds of phase retrieval for the ``inference.phase_sources``' estimates (two gained most).
PHASE_ITERATIONS = 2


def check_phased(options, names: Sequence[str]) -> None:
    """One-line ``ValueError`` where ``inference.phase_sources`` names a source not in ``names``
    (the separator's sources)."""
    check_named("inference.phase_sources", options.inference.phase_sources or (), names)


def consistent_estimate(gain: np.ndarray, spec: np.ndarray, config: STFTConfig, length: int,
                        n_iter: int = PHASE_ITERATIONS) -> np.ndarray:
    """The waveform ``(length,)`` float32 of the masked magnitude ``gain (T, F) * |spec (T, F)|``
    after ``n_iter`` rounds of phase retrieval started from the mixture's phase."""
    magnitude = gain * np.abs(spec)
    estimate = gain * spec
    for _ in range(n_iter):
        rebuilt = stft(istft(estimate, config, length=length), config)
        estimate = magnitude * unit_phasors(rebuilt)
    return istft(estimate, config, length=length)


def unit_phasors(spec: np.ndarray) -> np.ndarray:
    """``exp(i angle(spec))`` for a complex ``spec`` (any shape; 1 where it is 0), as ``spec / |spec|``:
    a complex exponential of the angle took 17 ms of a 10 s mixture's STFT at n_fft 1024, this 3."""
    size = np.abs(spec)
    phasors = spec / np.maximum(size, np.finfo(size.dtype).tiny)
    phasors[size == 0] = 1
    return phasors


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


class _Retrieval:
    """One source's rounds of phase retrieval on a stream of its masked frames: each round an
    ``OverlapAdd`` into a ``Framer``, so a frame's new phase is known once the frames its window
    overlaps are in (``n_fft / hop - 1`` frames later per round)."""

    def __init__(self, config: STFTConfig, n_iter: int) -> None:
        self.rounds = [(OverlapAdd(config, 1), Framer(config)) for _ in range(n_iter)]
        self.magnitudes = [np.zeros((0, config.n_bins), np.float32) for _ in range(n_iter)]

    def push(self, frames: np.ndarray, limit: int, n_samples: Optional[int] = None) -> np.ndarray:
        """The next masked frames ``(n, F)`` in, the frames ``(m, F)`` whose last round is done out
        (with ``n_samples``, the stream's length: all the rest)."""
        magnitude = np.abs(frames)
        for r, (synthesis, framer) in enumerate(self.rounds):
            self.magnitudes[r] = np.concatenate([self.magnitudes[r], magnitude])
            samples = synthesis.add(frames[None], limit)[0]
            rebuilt = framer.push(samples)
            if n_samples is not None:
                rebuilt = np.concatenate([rebuilt, framer.push(synthesis.finish(n_samples)[0]), framer.finish()])
            count = rebuilt.shape[0]
            magnitude = self.magnitudes[r][:count]  # the masked magnitudes, in the order the next round reads them
            frames = magnitude * unit_phasors(rebuilt)
            self.magnitudes[r] = self.magnitudes[r][count:]
        return frames


class StreamSynthesis:
    """``waveforms`` for a stream: ``add(gains (K, n, F), spec (n, F), limit)`` with the masks and
    mixture frames of the next ``n`` frames returns the ``(K, m)`` samples now final (none at or past
    sample ``limit``), ``finish(n_samples)`` the rest; together, ``waveforms``' estimates.

    Without phased sources it is one ``OverlapAdd``. With them, each phased source's frames go
    through its ``_Retrieval``, the mixture is overlap-added again beside them, and the other
    sources share what the phased ones leave by their masks, through one more ``Framer`` where
    there are several. Every source's samples come out together, as late as the slowest's.
    """

    def __init__(self, config: STFTConfig, n_sources: int, phased: Sequence[int] = (),
                 n_iter: int = PHASE_ITERATIONS) -> None:
        self.n_sources, self.n_bins = n_sources, config.n_bins
        self.phased = sorted(set(phased))[: n_sources - 1]
        self.others = [k for k in range(n_sources) if k not in self.phased]
        if not self.phased:
            self.plain = OverlapAdd(config, n_sources)
            return
        self.retrievals = [_Retrieval(config, n_iter) for _ in self.phased]
        self.mixture_out = OverlapAdd(config, 1)  # the mixture again (istft of its stft), as it becomes final
        self.phased_out = OverlapAdd(config, len(self.phased))
        self.shared = len(self.others) > 1  # the rest split again by the others' masks
        self.rest_framer = Framer(config)
        self.shares = np.zeros((len(self.others), 0, config.n_bins), np.float32)
        self.shared_out = OverlapAdd(config, len(self.others) - 1)
        # samples not yet released (from the same sample on): mixture, phased estimates, the shared others
        self.mixture = np.zeros(0, np.float32)
        self.phased_samples = np.zeros((len(self.phased), 0), np.float32)
        self.shared_samples = np.zeros((len(self.others) - 1, 0), np.float32)
        self.rest_fed = 0  # samples of the rest (counted from the first unreleased one) in rest_framer

    def add(self, gains: np.ndarray, spec: np.ndarray, limit: int) -> np.ndarray:
        if not self.phased:
            return self.plain.add(gains * spec[None], limit)
        return self._step(gains, spec, limit)

    def finish(self, n_samples: int) -> np.ndarray:
        if not self.phased:
            return self.plain.finish(n_samples)
        empty = np.zeros((self.n_sources, 0, self.n_bins), np.float32)
        return self._step(empty, empty[0], n_samples, n_samples)

    def _step(self, gains, spec, limit: int, n_samples: Optional[int] = None) -> np.ndarray:
        final = n_samples is not None
        if self.shared:
            total = np.sum(gains[self.others], axis=0)
            self.shares = np.concatenate([self.shares, gains[self.others] / np.where(total > 0, total, 1.0)], axis=1)
        self.mixture = np.concatenate([self.mixture, self._final(self.mixture_out, spec[None], limit, n_samples)[0]])
        frames = np.stack([r.push(gains[k] * spec, limit, n_samples) for r, k in zip(self.retrievals, self.phased)])
        samples = self._final(self.phased_out, frames, limit, n_samples)
        self.phased_samples = np.concatenate([self.phased_samples, samples], axis=1)
        ready = min(self.mixture.shape[0], self.phased_samples.shape[1])
        rest = self.mixture[:ready] - np.sum(self.phased_samples[:, :ready], axis=0)
        if self.shared:
            rebuilt = self.rest_framer.push(rest[self.rest_fed:].astype(np.float32))
            if final:
                rebuilt = np.concatenate([rebuilt, self.rest_framer.finish()])
            self.rest_fed = ready
            count = rebuilt.shape[0]
            shared = self._final(self.shared_out, self.shares[:-1, :count] * rebuilt[None], limit, n_samples)
            self.shares = self.shares[:, count:]
            self.shared_samples = np.concatenate([self.shared_samples, shared], axis=1)
            ready = min(ready, self.shared_samples.shape[1])
        out = np.zeros((self.n_sources, ready), np.float32)
        out[self.phased] = self.phased_samples[:, :ready]
        if self.shared:
            out[self.others[:-1]] = self.shared_samples[:, :ready]
        out[self.others[-1]] = rest[:ready] - np.sum(out[self.others[:-1]], axis=0)
        self.mixture, self.phased_samples = self.mixture[ready:], self.phased_samples[:, ready:]
        self.shared_samples = self.shared_samples[:, ready:]
        self.rest_fed -= ready
        return out

    @staticmethod
    def _final(synthesis: OverlapAdd, frames: np.ndarray, limit: int, n_samples: Optional[int]) -> np.ndarray:
        """``synthesis``'s samples made final by ``frames (S, n, F)``; with ``n_samples``, all the rest."""
        samples = synthesis.add(frames, limit)
        return samples if n_samples is None else np.concatenate([samples, synthesis.finish(n_samples)], axis=1)
