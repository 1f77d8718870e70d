"""A tracked level of a source's power in the masks: a steady noise level instead of each frame's guess.

A soft mask is each source's share of the mixture's power, ``m_k = e_k / sum_j e_j`` with
``e_k = m_k^2 |y|^2`` the power it gives source k. Frame by frame, a noise's share carries
the model's errors: a state chosen for a frame explains some of the speech too, or too little
noise, and the speech estimate inherits every such frame. For the sources named in
``inference.average`` (by default the source named ``noise``, the one refinement also treats
as the recording's noise) the masks take instead a level ``a`` tracked over about
``inference.average_seconds``, and become ``e_k / sum_j e_j`` with ``a`` in the averaged
sources' place (the Wiener filter with a tracked noise level). ``inference.average_rule``:

* ``presence`` (the default): each frame moves the level towards the mixture's power by as much
  as the masks say the bin is that source's, ``w_t = m_t^2`` (a speech-presence noise tracker;
  Gerkmann & Hendriks 2012 weight by the probability that speech is absent),

      a_t = a_{t-1} + w_t c_t (|y_t|^2 - a_{t-1}),   c_t = max(1 / W_t, c),   c = hop / (average_seconds * rate),

  with ``W_t`` the weights so far, the first frame's own ``e_0`` counted as one frame's: a weighted
  mean at first, a recursive average once the weights reach the time constant, and a level that
  holds where the speech dominates a bin instead of sinking with the noise's mask. Where the
  separator keeps ceilings for the source (``level_ceilings``, learnt from its training audio),
  a frame pulls towards at most ``c_f a_{t-1}`` once the weights reach ``CEILING_WARMUP``: a
  frame far above anything the noise did in training is the speech leaking through the noise's
  mask, and a handful of such frames otherwise lift the level by dB where the noise is weak
  (modulated brown noise's above 250 Hz by 2-3 dB behind real speech; docs/benchmarks.md, "A
  ceiling on the level's pull");
* ``share`` (separators saved in format 9): ``a_t = (1 - c) a_{t-1} + c e_t`` from ``a_0 = e_0``.

Both are causal, so streaming applies them frame by frame with the same numbers as whole-file
separation. A bin where every source's power is zero keeps its mask.

Chosen on real speech (docs/benchmarks.md, "Averaging the noise's power"): on 32 LibriSpeech tasks
with 13 s of training speech the presence rule over 0.5 s gained 1.2 dB speech SDRi over the masks
frame by frame and 0.56 over the share rule over 0.25 s, on every noise kind. Where every noise
repeats its long-term spectrum, ``fit_separator`` holds the level over 5 s instead (+0.15 dB on
10 s recordings against pink, modulated brown and a steady hum; "A longer level where the noise
repeats"); the ceilings gain another 0.11 dB there, and 0.31 against a jittery hum on 28 s recordings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy.signal import lfilter

from fhmm_ppl.runtime import padded
from fhmm_ppl.settings import AVERAGE_RULES as RULES
from fhmm_ppl.settings import CEILING_BOUND, CEILING_FLOOR, CEILING_QUANTILE, CEILING_WARMUP, check_noise_sources

#: the key of a source's ``level_ceilings`` among its saved emission arrays
CEILINGS = "level_ceilings"


class PowerAverage:
    """A tracked level of chosen sources' power over a mixture's frames, block after block.

    Call it on consecutive blocks of masks (a whole mixture is one block); it keeps the
    averages of the last frame, so a stream's blocks give the whole mixture's numbers.

    Args:
        sources: the indices (in the masks' source order) of the sources whose power is averaged.
        frames: the average's time constant in frames, ``average_seconds * sample_rate / hop`` (at
            most 1 means no averaging).
        rule: ``"presence"`` (each frame pulls the level towards ``|y|^2`` by its weight ``m^2``,
            from a weighted mean at the start) or ``"share"`` (the average of ``m^2 |y|^2`` from the
            first frame's; separators saved in format 9).
        ceilings: for the presence rule, per averaged source its ``level_ceilings`` ``(F,)`` or
            ``None`` (no ceiling), or ``None`` for all.
    """

    def __init__(self, sources: Sequence[int], frames: float, rule: str = "presence",
                 ceilings: Optional[Sequence[Optional[np.ndarray]]] = None) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown averaging rule {rule!r}; one of {', '.join(RULES)}")
        self.sources = tuple(sources)
        self.frames = max(float(frames), 1.0)
        self.rule = rule
        self.ceilings = _stacked(ceilings, len(self.sources)) if rule == "presence" else None  # (S, F) or None
        self.state = None  # per averaged source, the level at the last frame seen: (len(sources), F)
        self.weight = None  # "presence": per averaged source, the weight seen so far: (len(sources), F)
        self.free = None  # "presence": per averaged source, the level without ceilings: (len(sources), F)

    @property
    def active(self) -> bool:
        return bool(self.sources) and self.frames > 1.0

    def __call__(self, masks: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """Masks ``(K, n, F)`` of ``n`` frames with the chosen sources' power averaged, for the
        mixture's STFT ``spectrum (n, F)`` of the same frames (complex, or its magnitudes)."""
        if not self.active or masks.shape[1] == 0:
            return masks
        chosen = list(self.sources)
        mixture_power = np.abs(spectrum).astype(np.float64) ** 2  # (n, F)
        squared = np.asarray(masks, np.float64) ** 2  # (K, n, F): the presence rule's weights
        power = squared * mixture_power[None]
        if self.rule == "presence":
            power[chosen] = self._presence(squared[chosen], mixture_power, power[chosen, 0])
        else:
            power[chosen] = self._share(power[chosen])
        total = power.sum(axis=0)
        out = power / np.where(total > 0, total, 1.0)
        return np.where(total > 0, out, masks).astype(np.float32)

    def _share(self, power: np.ndarray) -> np.ndarray:
        """``a_t = (1 - c) a_{t-1} + c e_t`` over ``power (S, n, F)``, from the first frame's."""
        c = 1.0 / self.frames
        start = power[:, 0] if self.state is None else self.state
        averaged, _ = lfilter([c], [1.0, c - 1.0], power, axis=1, zi=((1.0 - c) * start)[:, None])
        self.state = averaged[:, -1]
        return averaged

    def _presence(self, weights: np.ndarray, mixture_power: np.ndarray, first_power: np.ndarray) -> np.ndarray:
        """``a_t = a_{t-1} + k_t (|y_t|^2 - a_{t-1})``, ``k_t = w_t max(1 / W_t, c)`` with ``W_t`` the
        weights ``w (S, n, F)`` summed so far: from the block's first frame's own power
        ``first_power (S, F)`` where the stream starts (worth one frame), the weighted mean of
        ``|y|^2`` until the weights reach the time constant's frames, a weighted recursive average after.
        The recursion runs in float32 in one compiled scan (``_track``; a source without ceilings has
        them infinite, and its capped level is its free one) on frames padded with zero weights,
        which leave the level as it is, to the block's ``runtime.frame_bucket`` size."""
        level, seen, free, first = self.state, self.weight, self.free, 0
        if level is None:
            level, seen, first = first_power.astype(np.float32), np.ones(first_power.shape, np.float32), 1
            free = level
        if self.ceilings is not None and self.ceilings.shape[-1] != level.shape[-1]:
            raise ValueError(f"the level's ceilings have {self.ceilings.shape[-1]} frequency bins, the mixture's "
                             f"STFT {level.shape[-1]}")
        n_frames = weights.shape[1]
        out = np.empty(weights.shape, np.float64)
        out[:, :first] = level[:, None]
        if n_frames > first:
            rest = n_frames - first
            # padded to the mixture's bucket, as its other kernels are, not to a bucket of ``rest``
            frame_weights = padded(np.moveaxis(weights[:, first:], 1, 0).astype(np.float32), n_frames)
            power = padded(np.asarray(mixture_power[first:], np.float32), n_frames)
            ceilings = np.full(level.shape, np.inf, np.float32) if self.ceilings is None else self.ceilings
            level, free, seen, levels = (np.asarray(x) for x in _track(
                level, free, seen, frame_weights, power, np.float32(1.0 / self.frames), ceilings))
            out[:, first:] = np.moveaxis(levels[:rest], 0, 1)
        self.state, self.weight, self.free = level, seen, free
        return out


@jax.jit
def _track(level, free, seen, weights, mixture_power, floor, ceilings):
    """The presence rule's recursion over frames: ``level``, ``free`` (the level without ceilings),
    ``seen`` (the weights so far) ``(S, F)`` at the frame before, ``weights (n, S, F)``,
    ``mixture_power (n, F)``, ``ceilings (S, F)`` (``inf``: none). Once a bin's weights reach
    ``CEILING_WARMUP``, the level moves towards ``min(|y|^2, ceiling * level)``, and it stays at least
    ``free`` over ``CEILING_BOUND``. Returns the last level, free level and weights, and every
    frame's level ``(n, S, F)``."""

    def step(carry, frame):
        level, free, seen = carry
        w, power = frame
        seen = seen + w
        gain = w * jnp.maximum(1.0 / seen, floor)
        capped = jnp.where((seen >= CEILING_WARMUP) & (level > 0), jnp.minimum(power, ceilings * level), power)
        free = free + gain * (power - free)
        level = jnp.maximum(level + gain * (capped - level), free / CEILING_BOUND)
        return (level, free, seen), level

    (level, free, seen), levels = jax.lax.scan(step, (level, free, seen), (weights, mixture_power))
    return level, free, seen, levels


def level_ceilings(power: np.ndarray, frames: float) -> Optional[np.ndarray]:
    """Per frequency bin, how far a noise's own power rises above its tracked level: ``(F,)``, the
    ``CEILING_QUANTILE`` over frames of ``|n_t|^2 / a_{t-1}``, ``a`` the presence rule's level of the
    noise alone (every weight one) over a time constant of ``frames``, from the frame where the
    weights reach ``CEILING_WARMUP``; at least ``CEILING_FLOOR`` (also where the level is zero).

    ``power (T, F)``: the noise's training STFT power. ``None`` where it has too few frames for one
    ratio past the warm-up."""
    power = np.asarray(power, np.float32)
    start = int(np.ceil(CEILING_WARMUP)) - 1  # the frame whose weights reach the warm-up (the first counts one)
    if power.ndim != 2 or power.shape[0] <= max(start, 1):
        return None
    levels = PowerAverage((0,), frames)._presence(np.ones((1,) + power.shape, np.float32), power, power[:1])[0]
    before, after = levels[start - 1:-1], power[start:].astype(np.float64)
    ratio = np.divide(after, before, out=np.ones_like(after), where=before > 0)
    return np.maximum(np.quantile(ratio, CEILING_QUANTILE, axis=0), CEILING_FLOOR).astype(np.float32)


def _stacked(ceilings, n_sources: int) -> Optional[np.ndarray]:
    """``ceilings`` (one ``(F,)`` or ``None`` per averaged source) as ``(S, F)`` float32, ``inf`` for
    ``None``; ``None`` where no source has any."""
    if ceilings is None or all(c is None for c in ceilings):
        return None
    if len(ceilings) != n_sources:
        raise ValueError(f"need one ceiling per averaged source ({n_sources}), got {len(ceilings)}")
    n_bins = next(np.shape(c)[-1] for c in ceilings if c is not None)
    return np.stack([np.full(n_bins, np.inf, np.float32) if c is None else np.asarray(c, np.float32)
                     for c in ceilings])


def source_indices(wanted: Sequence[str], names: Sequence[str]) -> tuple[int, ...]:
    """The indices in ``names`` (a separator's sources) of the sources named in ``wanted``."""
    wanted = set(wanted)
    return tuple(i for i, name in enumerate(names) if name in wanted)


def check_averaged(options, names: Sequence[str]) -> None:
    """One-line ``ValueError`` where ``inference.average`` names a source not in ``names`` (the
    separator's sources); the default, ``NOISE_SOURCES``, is skipped where it is missing."""
    inference = options.inference
    check_noise_sources("inference.average", inference.average, names, inference.tracked_seconds > 0)
