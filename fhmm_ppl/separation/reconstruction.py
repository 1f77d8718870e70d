"""Reconstruction learnt on mixtures of the training audio (after the discriminative NMF of
Weninger, Le Roux, Hershey & Watanabe, GlobalSIP 2014).

A state's dictionary is learnt to explain its source alone (``state_nmf``). On a mixture, the fit of
the chosen states' columns explains the mixture's magnitudes well, but the share of the fit a
source's columns take is not the best estimate of that source: in the bins where the sources
compete, a column takes too much or too little. Here the fit stays as it is, and each column gets a
factor per bin for the shares only, ``W~ = W * exp(theta)`` (``state_nmf.dictionary_masks``'
``factors``), learnt on mixtures of the sources' own training audio: every ``OFFSETS_DB`` level of
the first source against the others, each mixture separated as a recording is (fitted to it,
states inferred, the pitch warps chosen) and the factors learnt to minimise

    sum_k ||S_k - m_k Y||^2 / ||S_k||^2 / K  +  PENALTY * mean(theta^2)

(``S_k``, ``Y``: the sources' and the mixture's STFTs; ``m_k`` the masks the factors give), by
``STEPS`` steps of Adam. Only the sources that are not refined on each mixture learn factors (a
refined source's columns move with every recording). On real speech against pink and modulated brown
noise this gains 0.42 dB with 13 s of training speech and 0.11 with 6-8 s (docs/benchmarks.md,
"Reconstruction learnt on training mixtures").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from fhmm_ppl.audio.features import STFTConfig, stft
from fhmm_ppl.separation.masks import dictionary_terms
from fhmm_ppl.separation.resolution import line_sources
from fhmm_ppl.separation.state_nmf import factored, shares
from fhmm_ppl.separation.storage import SourceModel
from fhmm_ppl.separation.warps import HELD_DB

#: The key of a source's reconstruction factors ``(N, F, R)`` among its emission's saved arrays.
FACTORS = "factors"
#: By default factors are learnt where every noise's training audio repeats its long-term spectrum:
#: its quarters' long-term power spectra within this many dB of the whole's (``repetition``).
REPEAT_DB = 1.0
#: Levels (dB) of the first source against the sum of the others in the training mixtures.
OFFSETS_DB = (-5.0, 0.0, 5.0)
#: The longest training mixture (s): longer sources are cut, shorter ones repeated to this length.
MAX_SECONDS = 20.0
#: The training mixtures' frames the objective reads: the i-th mixture's frames ``i, i + STRIDE, ...``
#: (a third of the time each step; neighbouring frames tell much the same).
STRIDE = 3
STEPS = 200
PENALTY = 0.01
OPTIMISER = optax.adam(0.03)


def repetition(audio: np.ndarray, config: STFTConfig, parts: int = 4) -> float:
    """How far ``audio``'s ``parts`` stretches' long-term power spectra lie from the whole's: the RMS
    difference in dB over the bins within ``warps.HELD_DB`` of its strongest, averaged over the stretches.
    Stationary noise repeats within half a dB, noise that swells with a steady spectrum within one;
    babble and recorded dishes move by 1.5 and 4.6 (docs/benchmarks.md)."""
    power = np.abs(stft(np.asarray(audio, np.float32), config)).astype(np.float64) ** 2
    whole = 10 * np.log10(power.mean(axis=0) + 1e-20)
    held = whole >= whole.max() - HELD_DB
    stretches = [10 * np.log10(p.mean(axis=0) + 1e-20) for p in np.array_split(power, parts) if len(p)]
    return float(np.mean([np.sqrt(np.mean((s - whole)[held] ** 2)) for s in stretches]))


def repeats(noises: Mapping[str, np.ndarray], config: STFTConfig) -> bool:
    """Whether there is noise (``{name: training audio}``) and every noise repeats itself (``repetition``
    under ``REPEAT_DB``): what is learnt on its training audio then holds on another stretch."""
    return bool(noises) and all(repetition(a, config) < REPEAT_DB for a in noises.values())


def learns(noises: Mapping[str, np.ndarray], config: STFTConfig, lines_at: STFTConfig) -> bool:
    """Whether ``fit_separator`` learns factors by default (``training.reconstruction`` unset): where
    every noise repeats itself (``repeats``) and none is lines at ``lines_at``
    (``resolution.line_sources``). Against a jittery hum and between talkers the factors lost
    (docs/benchmarks.md)."""
    return repeats(noises, config) and not line_sources(noises, lines_at)


def training_mixtures(sources: Mapping[str, np.ndarray], sample_rate: int,
                      offsets: Sequence[float] = OFFSETS_DB) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(mixture (n,), sources (K, n))`` per offset: every source repeated or cut to the longest's
    length (at most ``MAX_SECONDS``), the others at the power of the first and the first at
    ``offset`` dB against their sum."""
    audio = [np.asarray(a, np.float64) for a in sources.values()]
    length = min(max(len(a) for a in audio), int(MAX_SECONDS * sample_rate))
    audio = [np.resize(a, length) for a in audio]
    power = [max(float(np.mean(a**2)), 1e-20) for a in audio]
    others = [a * np.sqrt(power[0] / p) for a, p in zip(audio[1:], power[1:])]
    rest = np.sum(others, axis=0)
    rest_power = max(float(np.mean(rest**2)), 1e-20)
    out = []
    for offset in offsets:
        gain = np.sqrt(rest_power / power[0] * 10 ** (offset / 10))
        parts = np.stack([audio[0] * gain] + others).astype(np.float32)
        out.append((parts.sum(axis=0), parts))
    return out


def learnt_factors(separator, sources: Mapping[str, np.ndarray], learnt: Sequence[str], steps: int = STEPS,
                   progress: bool = False) -> tuple[list[dict[str, SourceModel]], np.ndarray]:
    """``separator``'s model sets with factors (``FACTORS``) for the sources named in ``learnt``,
    learnt on ``training_mixtures(sources)``, and the first set's objective before each step ``(steps,)``.
    ``progress``: a bar over the training mixtures separated and the model sets' steps."""
    config = separator.options.stft
    chosen = [separator.names.index(name) for name in learnt]
    mixtures = training_mixtures(sources, separator.sample_rate)
    bar = tqdm(total=len(mixtures) + len(separator.members), desc="reconstruction factors", disable=not progress)
    per_set, targets = None, []
    for index, (mixture, parts) in enumerate(mixtures):
        spec = stft(mixture, config)
        read = slice(index % STRIDE, len(spec), STRIDE)  # the frames the objective reads
        targets.append((spec[read], np.stack([stft(p, config)[read] for p in parts])))
        terms = separator.refine(mixture).per_set(spec, partial(dictionary_terms, **separator.mask.make.keywords))
        terms = [(np.asarray(s)[read], [np.asarray(t)[read] for t in ts]) for s, ts in terms]  # padding cut too
        per_set = [[t] for t in terms] if per_set is None else [seen + [t] for seen, t in zip(per_set, terms)]
        bar.update()
    mixture_stft = jnp.asarray(np.concatenate([s for s, _ in targets]))
    source_stfts = jnp.asarray(np.concatenate([r for _, r in targets], axis=1))
    members, objective = [], None
    for member, runs in zip(separator.members, per_set):
        states = jnp.asarray(np.concatenate([s for s, _ in runs]))
        terms = tuple(jnp.asarray(np.concatenate([t[k] for _, t in runs])) for k in range(len(member)))
        sizes = {k: member[separator.names[k]].emission["dictionaries"].shape for k in chosen}
        zeros = tuple(jnp.zeros(sizes[k], jnp.float32) for k in chosen)  # the shares as fitted
        theta, history = _steps(zeros, (terms, states, mixture_stft, source_stfts), tuple(chosen), steps)
        objective = np.asarray(history) if objective is None else objective
        factors = {separator.names[k]: np.exp(np.asarray(t)).astype(np.float32) for k, t in zip(chosen, theta)}
        members.append({name: model if name not in factors else
                        model._replace(emission={**model.emission, FACTORS: factors[name]})
                        for name, model in member.items()})
        bar.update()
    bar.close()
    return members, objective


@partial(jax.jit, static_argnames=("chosen", "steps"))
def _steps(theta, data, chosen: tuple, steps: int):
    """``steps`` Adam steps on ``_objective`` from the factors' logarithms ``theta``, in one program (the
    data are arguments, not constants: XLA would fold them); ``theta`` then, and the objective before
    each step."""
    def step(carry, _):
        theta, state = carry
        value, grad = jax.value_and_grad(_objective)(theta, data, chosen)
        updates, state = OPTIMISER.update(grad, state)
        return (optax.apply_updates(theta, updates), state), value

    (theta, _), history = jax.lax.scan(step, (theta, OPTIMISER.init(theta)), None, length=steps)
    return theta, history


def _objective(theta, data, chosen: tuple):
    """The module's objective at the factors' logarithms ``theta`` (one ``(N, F, R)`` per ``chosen`` source)."""
    terms, states, mixture_stft, source_stfts = data
    masks = factored_shares(terms, states, dict(zip(chosen, theta)))
    error = jnp.sum(jnp.abs(source_stfts - masks * mixture_stft[None]) ** 2, axis=(1, 2))
    energy = jnp.sum(jnp.abs(source_stfts) ** 2, axis=(1, 2))
    return jnp.mean(error / energy) + PENALTY * sum(jnp.mean(t**2) for t in theta) / len(theta)


def factored_shares(terms, states, theta: dict):
    """Masks ``(K, T, F)`` from each source's column terms ``(T, M R, F)`` (``dictionary_terms``), the
    columns of the sources in ``theta`` times ``exp(theta[k])`` (``(N, F, R)``) at their ``states (T, K, M)``,
    as ``state_nmf.dictionary_masks`` makes them with ``factors``."""
    parts = [(t if k not in theta else factored(t, jnp.exp(jnp.swapaxes(theta[k], 1, 2)), states[:, k])).sum(axis=1)
             for k, t in enumerate(terms)]
    return shares(jnp.stack(parts))
