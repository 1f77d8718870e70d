"""Emission families: parameters, their priors' sample sites, initialisation and the EM M-step.

A family ties an emission model from ``fhmm_ppl.hmm.emissions`` to the prior
roles of its parameters. It provides, for K chains:

* ``sample(n_states, dim, priors)``: NumPyro sample sites for the parameters;
* ``log_lik(observations, params) -> (T, N_1, ..., N_K)``;

and for one chain (training one source's HMM):

* ``initialise(frames, n_states, seed)``: seeded k-means;
* ``statistics(observations, gamma)``: expected sufficient statistics;
* ``m_step(stats, params, priors)``: closed-form MAP under conjugate priors;
* ``reinitialise(params, dead, frames, stats)``: restart states no frame visits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
from jax import Array
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from fhmm_ppl.hmm import emissions
from fhmm_ppl.models.priors import (
    FlatCovariancePrior,
    FlatPrior,
    PositiveFlatPrior,
    map_update,
)


class GaussianParams(NamedTuple):
    """Gaussian emission parameters: K means ``(N_k, D)``, K covariances (hmmlearn shapes)."""

    means: tuple[Array, ...]
    covars: tuple[Array, ...]


class ComplexGaussianParams(NamedTuple):
    """Complex-Gaussian emission parameters: K power spectral densities ``(N_k, F)``."""

    psd: tuple[Array, ...]


def kmeans_labels(frames: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means (scikit-learn) on ``(M, D)`` frames -> (centers ``(n, D)``, labels ``(M,)``).

    Frames with fewer distinct values than clusters (a pure periodic tone repeats a handful of
    frames) give some clusters the same center; scikit-learn warns about it, but states that start
    alike are harmless (EM moves them apart or they stay alike), so the warning is not passed on."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.shape[0] < n_clusters:
        raise ValueError(f"need at least {n_clusters} frames to initialise {n_clusters} states, got {frames.shape[0]}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Number of distinct clusters", ConvergenceWarning)
        km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(frames)
    return km.cluster_centers_, km.labels_


def _floor_eigenvalues(cov: Array, floor: float) -> Array:
    vals, vecs = jnp.linalg.eigh(cov)
    out = (vecs * jnp.maximum(vals, floor)[..., None, :]) @ jnp.swapaxes(vecs, -1, -2)
    return 0.5 * (out + jnp.swapaxes(out, -1, -2))  # exactly symmetric, as the PD constraint checks


@dataclass(frozen=True)
class GaussianFamily:
    """Gaussian emissions on feature vectors with hmmlearn's covariance types."""

    covariance_type: str = "diag"
    min_covar: float = 1e-3
    name: str = field(default="gaussian", init=False)

    def __post_init__(self) -> None:
        if self.covariance_type not in emissions.COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {', '.join(emissions.COVARIANCE_TYPES)}, got {self.covariance_type!r}"
            )

    def default_priors(self) -> dict[str, Any]:
        covars = PositiveFlatPrior() if self.covariance_type in ("diag", "spherical") else FlatCovariancePrior()
        return {"means": FlatPrior(), "covars": covars}

    def _covar_shape(self, n: int, dim: int) -> tuple[int, ...]:
        return {"spherical": (n,), "diag": (n, dim), "full": (n, dim, dim), "tied": (dim, dim)}[self.covariance_type]

    def sample(self, n_states: tuple[int, ...], dim: int, priors: Mapping[str, Any]) -> GaussianParams:
        means, covars = [], []
        for k, n in enumerate(n_states):
            means.append(numpyro.sample(f"means_{k}", priors["means"].distribution((n, dim))))
            covars.append(numpyro.sample(f"covars_{k}", priors["covars"].distribution(self._covar_shape(n, dim))))
        return GaussianParams(tuple(means), tuple(covars))

    def site_values(self, params: GaussianParams) -> dict[str, Array]:
        out = {f"means_{k}": m for k, m in enumerate(params.means)}
        out.update({f"covars_{k}": c for k, c in enumerate(params.covars)})
        return out

    def from_sites(self, sites: Mapping[str, Array], n_chains: int) -> GaussianParams:
        return GaussianParams(
            tuple(sites[f"means_{k}"] for k in range(n_chains)), tuple(sites[f"covars_{k}"] for k in range(n_chains))
        )

    def log_lik(self, observations: Array, params: GaussianParams) -> Array:
        return emissions.gaussian_log_lik(observations, params.means, params.covars, self.covariance_type)

    def initialise(self, frames: np.ndarray, n_states: int, seed: int) -> GaussianParams:
        centers, _ = kmeans_labels(frames, n_states, seed)
        dim = frames.shape[1]
        # One frame has no spread (np.cov would divide by zero): start from the floor alone.
        spread = np.atleast_2d(np.cov(frames.T)) if frames.shape[0] > 1 else np.zeros((dim, dim))
        cov = spread + self.min_covar * np.eye(dim)
        covars = {
            "spherical": np.full(n_states, np.mean(np.diag(cov))),
            "diag": np.tile(np.diag(cov), (n_states, 1)),
            "full": np.tile(cov, (n_states, 1, 1)),
            "tied": cov,
        }[self.covariance_type]
        return GaussianParams((jnp.asarray(centers, jnp.float32),), (jnp.asarray(covars, jnp.float32),))

    def statistics(self, observations: Array, gamma: Array) -> dict[str, Array]:
        """``observations (B, T, D)``, ``gamma (B, T, N)`` (zero at padding) -> summed statistics."""
        stats = {
            "weight": gamma.sum(axis=(0, 1)),
            "sum": jnp.einsum("btn,btd->nd", gamma, observations),
        }
        if self.covariance_type in ("diag", "spherical"):
            stats["sum_sq"] = jnp.einsum("btn,btd->nd", gamma, observations**2)
        else:
            stats["outer"] = jnp.einsum("btn,btd,bte->nde", gamma, observations, observations)
        return stats

    def m_step(self, stats: Mapping[str, Array], params: GaussianParams, priors: Mapping[str, Any]) -> GaussianParams:
        weight = jnp.maximum(stats["weight"], 1e-10)[:, None]
        dim = stats["sum"].shape[1]
        old_var = self._as_diag(params.covars[0], params.means[0].shape[0], dim)
        means = map_update(
            priors["means"], "means", ml=stats["sum"] / weight, weighted_sum=stats["sum"], weight=weight, variance=old_var
        )
        sq = None
        if self.covariance_type in ("diag", "spherical"):
            sq = stats["sum_sq"] - 2 * means * stats["sum"] + means**2 * weight  # sum gamma (y - mu)^2
            if self.covariance_type == "spherical":
                shape_stat, scale_stat = 0.5 * dim * weight[:, 0], 0.5 * sq.sum(axis=1)
                ml = sq.sum(axis=1) / (dim * weight[:, 0])
            else:
                shape_stat, scale_stat, ml = 0.5 * weight, 0.5 * sq, sq / weight
            covars = map_update(priors["covars"], "covars", ml=ml, shape_stat=shape_stat, scale_stat=scale_stat)
            covars = jnp.maximum(covars, self.min_covar)
        else:
            scatter = (
                stats["outer"]
                - jnp.einsum("nd,ne->nde", means, stats["sum"])
                - jnp.einsum("nd,ne->nde", stats["sum"], means)
                + weight[:, :, None] * jnp.einsum("nd,ne->nde", means, means)
            )
            if self.covariance_type == "tied":
                scatter, total = scatter.sum(axis=0), weight.sum()
                covars = map_update(priors["covars"], "covars", ml=scatter / total, scatter=scatter, weight=total)
            else:
                covars = map_update(
                    priors["covars"], "covars", ml=scatter / weight[:, :, None], scatter=scatter, weight=weight[:, 0]
                )
            covars = _floor_eigenvalues(0.5 * (covars + jnp.swapaxes(covars, -1, -2)), self.min_covar)
        return GaussianParams((means,), (covars,))

    def _as_diag(self, covars: Array, n: int, dim: int) -> Array:
        if self.covariance_type == "spherical":
            return jnp.broadcast_to(covars[:, None], (n, dim))
        if self.covariance_type == "diag":
            return covars
        if self.covariance_type == "tied":
            return jnp.broadcast_to(jnp.diag(covars), (n, dim))
        return jnp.diagonal(covars, axis1=1, axis2=2)

    def reinitialise(self, params: GaussianParams, dead: Array, frames: Array, stats: Mapping[str, Array]) -> GaussianParams:
        """Dead states take a data frame as mean and the data's overall spread as covariance."""
        means = jnp.where(dead[:, None], frames, params.means[0])
        total = stats["weight"].sum()
        mean_all = stats["sum"].sum(0) / total
        if self.covariance_type in ("diag", "spherical"):
            var_all = jnp.maximum(stats["sum_sq"].sum(0) / total - mean_all**2, self.min_covar)
            fresh = var_all if self.covariance_type == "diag" else jnp.full(dead.shape, var_all.mean())
            covars = jnp.where(dead[:, None] if self.covariance_type == "diag" else dead, fresh, params.covars[0])
        elif self.covariance_type == "full":
            cov_all = stats["outer"].sum(0) / total - jnp.outer(mean_all, mean_all)
            cov_all = _floor_eigenvalues(cov_all, self.min_covar)
            covars = jnp.where(dead[:, None, None], cov_all, params.covars[0])
        else:
            covars = params.covars[0]
        return GaussianParams((means,), (covars,))


@dataclass(frozen=True)
class LogMaxFamily(GaussianFamily):
    """Log-max (MIXMAX) model on log-magnitude spectra; one chain is a diagonal Gaussian."""

    covariance_type: str = "diag"
    name: str = field(default="logmax", init=False)

    def __post_init__(self) -> None:
        if self.covariance_type != "diag":
            raise ValueError("the log-max emission uses diagonal variances (covariance_type: diag)")

    def log_lik(self, observations: Array, params: GaussianParams) -> Array:
        if len(params.means) == 1:
            return super().log_lik(observations, params)
        return emissions.logmax_log_lik(observations, params.means, params.covars)


@dataclass(frozen=True)
class ComplexGaussianFamily:
    """Complex-Gaussian (Itakura-Saito) emissions on STFT power ``|y|^2`` ``(T, F)``."""

    min_psd: float = 1e-10
    name: str = field(default="complex_gaussian", init=False)

    def default_priors(self) -> dict[str, Any]:
        return {"psd": PositiveFlatPrior()}

    def sample(self, n_states: tuple[int, ...], dim: int, priors: Mapping[str, Any]) -> ComplexGaussianParams:
        return ComplexGaussianParams(
            tuple(numpyro.sample(f"psd_{k}", priors["psd"].distribution((n, dim))) for k, n in enumerate(n_states))
        )

    def site_values(self, params: ComplexGaussianParams) -> dict[str, Array]:
        return {f"psd_{k}": v for k, v in enumerate(params.psd)}

    def from_sites(self, sites: Mapping[str, Array], n_chains: int) -> ComplexGaussianParams:
        return ComplexGaussianParams(tuple(sites[f"psd_{k}"] for k in range(n_chains)))

    def log_lik(self, observations: Array, params: ComplexGaussianParams) -> Array:
        return emissions.complex_gaussian_log_lik(observations, params.psd)

    def initialise(self, frames: np.ndarray, n_states: int, seed: int) -> ComplexGaussianParams:
        frames = np.asarray(frames, np.float64)
        floor = max(self.min_psd, 1e-6 * float(frames.mean()))
        _, labels = kmeans_labels(np.log(frames + floor), n_states, seed)
        psd = np.stack([frames[labels == i].mean(axis=0) for i in range(n_states)]) + floor
        return ComplexGaussianParams((jnp.asarray(psd, jnp.float32),))

    def statistics(self, observations: Array, gamma: Array) -> dict[str, Array]:
        return {"weight": gamma.sum(axis=(0, 1)), "sum": jnp.einsum("btn,btf->nf", gamma, observations)}

    def m_step(self, stats: Mapping[str, Array], params: ComplexGaussianParams, priors: Mapping[str, Any]):
        weight = jnp.maximum(stats["weight"], 1e-10)[:, None]
        psd = map_update(
            priors["psd"], "psd", ml=stats["sum"] / weight,
            shape_stat=jnp.broadcast_to(weight, stats["sum"].shape), scale_stat=stats["sum"],
        )
        return ComplexGaussianParams((jnp.maximum(psd, self.min_psd),))

    def reinitialise(self, params, dead: Array, frames: Array, stats: Mapping[str, Array]):
        mean_power = stats["sum"].sum(0) / stats["weight"].sum()
        fresh = 0.5 * (frames + mean_power)
        return ComplexGaussianParams((jnp.where(dead[:, None], jnp.maximum(fresh, self.min_psd), params.psd[0]),))


FAMILIES = {"gaussian": GaussianFamily, "logmax": LogMaxFamily, "complex_gaussian": ComplexGaussianFamily}


def make_family(name: str, **options: Any):
    """Build an emission family by name (``gaussian``, ``logmax``, ``complex_gaussian``)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown emission {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name](**options)
