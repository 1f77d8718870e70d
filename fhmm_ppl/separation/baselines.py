"""Baselines on the same STFT as the FHMM: supervised and semi-supervised NMF, and oracle masks.

Every FHMM number should sit between a floor (the unprocessed mixture, scored
by ``metrics.separation_report``) and a ceiling (oracle masks computed from the
true sources). Supervised NMF is the classic competitor: one dictionary per
source learnt from the same training audio (scikit-learn's NMF, Kullback-Leibler
loss, multiplicative updates), activations fitted on the mixture with the
dictionaries fixed, and a Wiener-style soft mask per source. Semi-supervised NMF
(Smaragdis, Raj & Shashanka 2007) is the competitor of semi-supervised FHMMs: the
known sources' dictionaries from their training audio, the unknown sources'
dictionaries and every activation learnt on the mixture.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from sklearn.decomposition import NMF, non_negative_factorization

from fhmm_ppl.audio.features import STFTConfig, istft, stft

EPS = 1e-10


def apply_masks(mixture: np.ndarray, masks: np.ndarray, config: STFTConfig) -> np.ndarray:
    """Mask the mixture STFT per source and invert: masks ``(K, T, F)`` -> ``(K, n_samples)``."""
    spec = stft(mixture, config)
    return np.stack([istft(m * spec, config, length=mixture.shape[0]) for m in masks])


def oracle_masks(references: np.ndarray, mixture: np.ndarray, config: STFTConfig, kind: str = "irm") -> np.ndarray:
    """Ideal ratio (``irm``: power ratio, i.e. the oracle Wiener filter) or binary (``ibm``) masks.

    Args:
        references: ``(K, n_samples)`` true sources; mixture ``(n_samples,)``.

    Returns:
        ``(K, T, F)`` masks in [0, 1] summing to one over sources.
    """
    power = np.stack([np.abs(stft(r, config)) ** 2 for r in references])
    if kind == "irm":
        total = power.sum(axis=0, keepdims=True)
        safe = np.where(total > 0, total, 1.0)
        return np.where(total > 0, power / safe, 1.0 / power.shape[0])  # silent bins: shared equally
    if kind == "ibm":
        winner = np.argmax(power, axis=0)  # ties (e.g. silent bins) go to the first source
        return (np.arange(power.shape[0])[:, None, None] == winner[None]).astype(np.float32)
    raise ValueError(f"oracle mask kind must be 'irm' or 'ibm', got {kind!r}")


@dataclass
class SupervisedNMF:
    """Per-source NMF dictionaries ``(R, F)`` learnt on training magnitude spectra."""

    dictionaries: dict
    config: STFTConfig

    def separate(self, mixture: np.ndarray) -> dict[str, np.ndarray]:
        """Split a mono mixture ``(n_samples,)`` into ``{name: (n_samples,)}``."""
        spec = stft(mixture, self.config)
        magnitude = np.abs(spec).astype(np.float64) + EPS
        bases = np.concatenate(list(self.dictionaries.values()), axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings: a fixed iteration budget is intended
            activations, _, _ = non_negative_factorization(
                magnitude, H=bases, n_components=bases.shape[0], update_H=False, init="custom",
                W=np.full((magnitude.shape[0], bases.shape[0]), magnitude.mean() / bases.sum(1).mean()),
                solver="mu", beta_loss="kullback-leibler", max_iter=200,
            )
        parts, start = [], 0
        for basis in self.dictionaries.values():
            parts.append(activations[:, start : start + basis.shape[0]] @ basis)
            start += basis.shape[0]
        parts = np.stack(parts) ** 2
        masks = parts / np.maximum(parts.sum(axis=0, keepdims=True), EPS)
        estimates = apply_masks(mixture, masks, self.config)
        return dict(zip(self.dictionaries, estimates))


def fit_supervised_nmf(sources: Mapping[str, np.ndarray], n_components: int = 32, config: STFTConfig = STFTConfig(),
                       seed: int = 0) -> SupervisedNMF:
    """Learn one KL-NMF dictionary of ``n_components`` atoms per named source."""
    dictionaries = {}
    for name, audio in sources.items():
        magnitude = np.abs(stft(np.asarray(audio, np.float32), config)).astype(np.float64) + EPS
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = NMF(n_components=n_components, init="nndsvda", solver="mu", beta_loss="kullback-leibler",
                        max_iter=300, random_state=seed).fit(magnitude)
        dictionaries[name] = model.components_
    return SupervisedNMF(dictionaries, config)


def kl_divergence(data: np.ndarray, model: np.ndarray) -> float:
    """Generalised Kullback-Leibler divergence ``sum data log(data / model) - data + model`` of two
    positive arrays of one shape."""
    return float(np.sum(data * np.log(data / model) - data + model))


@dataclass
class SemiSupervisedNMF:
    """KL-NMF with the known sources' dictionaries ``(R, F)`` fixed and ``n_components`` atoms per
    unknown source learnt on each mixture (with every activation), by Lee & Seung's multiplicative
    updates, each of which cannot increase the divergence."""

    dictionaries: dict
    unknown: tuple
    config: STFTConfig
    n_components: int = 8
    n_iter: int = 200
    seed: int = 0

    def factorise(self, magnitude: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
        """Fit a mixture's magnitudes ``(T, F)``: activations ``(T, R_total)``, ``{name: (R, F)}``
        every source's dictionary (known ones the same arrays), and the divergence ``(n_iter + 1,)``
        before each iteration and after the last."""
        rng = np.random.default_rng(self.seed)
        scale = magnitude.mean()
        learnt = {name: rng.uniform(0.5, 1.5, (self.n_components, magnitude.shape[1])) * scale for name in self.unknown}
        bases = {**self.dictionaries, **learnt}
        stacked = np.concatenate(list(bases.values()), axis=0)
        activations = np.full((magnitude.shape[0], stacked.shape[0]), magnitude.mean() / stacked.sum(1).mean())
        first = sum(b.shape[0] for b in self.dictionaries.values())
        history = [kl_divergence(magnitude, activations @ stacked)]
        for _ in range(self.n_iter):
            activations *= ((magnitude / (activations @ stacked)) @ stacked.T) / stacked.sum(axis=1)[None, :]
            ratio = magnitude / (activations @ stacked)
            own = activations[:, first:]
            stacked[first:] *= (own.T @ ratio) / np.maximum(own.sum(axis=0)[:, None], EPS)
            history.append(kl_divergence(magnitude, activations @ stacked))
        start = first
        for name in self.unknown:
            bases[name] = stacked[start : start + self.n_components]
            start += self.n_components
        return activations, bases, np.array(history)

    def separate(self, mixture: np.ndarray) -> dict[str, np.ndarray]:
        """Split a mono mixture ``(n_samples,)`` into ``{name: (n_samples,)}``, known sources first."""
        magnitude = np.abs(stft(mixture, self.config)).astype(np.float64) + EPS
        activations, bases, _ = self.factorise(magnitude)
        parts, start = [], 0
        for basis in bases.values():
            parts.append(activations[:, start : start + basis.shape[0]] @ basis)
            start += basis.shape[0]
        parts = np.stack(parts) ** 2
        masks = parts / np.maximum(parts.sum(axis=0, keepdims=True), EPS)
        return dict(zip(bases, apply_masks(mixture, masks, self.config)))


def fit_semi_supervised_nmf(sources: Mapping[str, np.ndarray], unknown, n_components: int = 32,
                            unknown_components: int = 8, config: STFTConfig = STFTConfig(),
                            seed: int = 0) -> SemiSupervisedNMF:
    """Learn KL-NMF dictionaries of ``n_components`` atoms for the sources with training audio; the
    ``unknown`` names get ``unknown_components`` atoms each, learnt on each mixture."""
    known = fit_supervised_nmf(sources, n_components, config, seed).dictionaries
    unknown = (unknown,) if isinstance(unknown, str) else tuple(unknown)
    return SemiSupervisedNMF(known, unknown, config, unknown_components, seed=seed)
