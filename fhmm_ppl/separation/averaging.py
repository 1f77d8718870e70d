"""A running average of a source's power in the masks: a steady noise level instead of each frame's guess.

A soft mask is each source's share of the mixture's power, ``m_k = e_k / sum_j e_j`` with
``e_k = m_k^2 |y|^2`` the power it gives source k. Frame by frame, a noise's share carries
the model's errors: a state chosen for a frame explains some of the speech too, or too little
noise, and the speech estimate inherits every such frame. For the sources named in
``inference.average`` (by default the source named ``noise``, the one refinement also treats
as the recording's noise) the masks take instead the recursive average of that power over about
``inference.average_seconds``,

    a_t = (1 - c) a_{t-1} + c e_t,    c = hop / (average_seconds * sample_rate),

started at the first frame's ``e_0``, and the masks become ``e_k / sum_j e_j`` with ``a`` in the
averaged sources' place (the Wiener filter with a tracked noise level, as speech enhancement
tracks a noise's power). The average is causal, so streaming applies it frame by frame with the
same numbers as whole-file separation. A bin where every source's power is zero keeps its mask.

Chosen on real speech (docs/benchmarks.md, "Averaging the noise's power"): the default
separator's masks with the noise's power averaged over 0.25 s gained 0.66 dB speech SDRi on 32
LibriSpeech tasks (pink, modulated brown, hum, recorded dishes; 0.82 over 1 s), on every noise
kind; longer averages lose on a noise that rises and falls within a second (an exercise bike).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from fhmm_ppl.settings import check_noise_sources


class PowerAverage:
    """The recursive average of chosen sources' power over a mixture's frames, block after block.

    Call it on consecutive blocks of masks (a whole mixture is one block); it keeps the
    averages of the last frame, so a stream's blocks give the whole mixture's numbers.

    Args:
        sources: the indices (in the masks' source order) of the sources whose power is averaged.
        frames: the average's time constant in frames, ``average_seconds * sample_rate / hop`` (at
            most 1 means no averaging).
    """

    def __init__(self, sources: Sequence[int], frames: float) -> None:
        self.sources = tuple(sources)
        self.coefficient = 1.0 / max(float(frames), 1.0)
        self.state = None  # per averaged source, the average at the last frame seen: (len(sources), F)

    @property
    def active(self) -> bool:
        return bool(self.sources) and self.coefficient < 1.0

    def __call__(self, masks: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """Masks ``(K, n, F)`` of ``n`` frames with the chosen sources' power averaged, for the
        mixture's STFT ``spectrum (n, F)`` of the same frames (complex, or its magnitudes)."""
        if not self.active or masks.shape[1] == 0:
            return masks
        chosen = list(self.sources)
        power = np.asarray(masks, np.float64) ** 2 * (np.abs(spectrum).astype(np.float64) ** 2)[None]  # (K, n, F)
        c = self.coefficient
        start = power[chosen, 0] if self.state is None else self.state
        averaged, _ = lfilter([c], [1.0, c - 1.0], power[chosen], axis=1, zi=((1.0 - c) * start)[:, None])
        self.state = averaged[:, -1]
        power[chosen] = averaged
        total = power.sum(axis=0)
        out = power / np.where(total > 0, total, 1.0)
        return np.where(total > 0, out, masks).astype(np.float32)


def source_indices(wanted: Sequence[str], names: Sequence[str]) -> tuple[int, ...]:
    """The indices in ``names`` (a separator's sources) of the sources named in ``wanted``."""
    wanted = set(wanted)
    return tuple(i for i, name in enumerate(names) if name in wanted)


def check_averaged(options, names: Sequence[str]) -> None:
    """One-line ``ValueError`` where ``inference.average`` names a source not in ``names`` (the
    separator's sources); the default, ``NOISE_SOURCES``, is skipped where it is missing."""
    inference = options.inference
    check_noise_sources("inference.average", inference.average, names, inference.average_seconds > 0)
