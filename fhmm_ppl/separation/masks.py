"""Masks: pure functions of a posterior, one set of source models and the mixture -> ``(K, T, F)``.

Soft masks sum to one over sources at every bin, so the estimates sum to the mixture:

- ``wiener``: the posterior-weighted Wiener gain ``sum_s p(s_t = s | y) v_{k,s_k}(f) / sum_j v_{j,s_j}(f)``
  from each state's power spectrum (under structured mean field, whose posterior is per source,
  ``E_q[v_k] / sum_j E_q[v_j]``);
- ``dominance``: the posterior probability that each source is the louder in a bin or band (log-max
  emissions), spread to STFT bins by the emission;
- ``blend``: the average of the two;
- ``dictionary``: each source's ``M`` most probable states per frame (``inference.dictionary_states``)
  explain the mixture's magnitudes through their NMF dictionaries; the sources' shares of the fit
  (``state_nmf``).

``binary`` keeps only the largest mask per bin. ``choose`` picks the mask and the posterior form
it reads once, when a separator is built.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fhmm_ppl.hmm.emissions import joint_sum, logmax_dominance, logmax_terms
from fhmm_ppl.separation.posterior import Factored
from fhmm_ppl.separation.state_nmf import column_terms, dictionary_masks

#: Frames per chunk for the ``(T, prod N, F)`` dominance tensors.
DOMINANCE_CHUNK = 16


class Mixture(NamedTuple):
    """The mixture as masks read it: model frames ``(T, D)`` and STFT magnitudes ``(T, F)``
    (``None`` where no mask reads them)."""

    frames: jax.Array
    magnitude: object


class MaskChoice(NamedTuple):
    """A separator's mask: ``make(posterior, models, mixture, emission) -> (K, T, F)``, the posterior
    form it reads (``posterior.FORMS``), whether it needs Wiener shares and the mixture's magnitudes."""

    make: Callable
    form: str
    shares: bool
    magnitude: bool


def wiener(posterior, models, mixture, emission) -> np.ndarray:
    psd = models.params.psd
    if isinstance(posterior, Factored):
        return np.asarray(_expected_power_ratio(posterior.per_source, psd))
    shares = wiener_shares(psd) if models.shares is None else models.shares
    return np.asarray(_gains_from_shares(posterior.expect(shares), psd[0].shape[1]))


def dominance(posterior, models, mixture, emission) -> np.ndarray:
    masks = _dominance_from_joint(posterior.joint, mixture.frames, models.params.means, models.params.variances)
    return emission.spread(np.asarray(masks))


def blend(posterior, models, mixture, emission) -> np.ndarray:
    return 0.5 * (dominance(posterior, models, mixture, emission) + wiener(posterior, models, mixture, emission))


def dictionary(posterior, models, mixture, emission, n_chosen: int = 1, warps: tuple = (),
               warped: tuple = ()) -> np.ndarray:
    return np.asarray(dictionary_masks(models.dictionaries, chosen_states(posterior, n_chosen), mixture.magnitude,
                                       warps=warps, warped=warped, rows=models.warped, factors=models.factors))


def dictionary_terms(posterior, models, mixture, emission, n_chosen: int = 1, warps: tuple = (),
                     warped: tuple = ()) -> tuple:
    """``dictionary``'s states ``(T, K, M)`` and its fit's column terms (``state_nmf.column_terms``),
    without factors: what ``separation.reconstruction`` learns them on."""
    states = chosen_states(posterior, n_chosen)
    return states, column_terms(models.dictionaries, states, mixture.magnitude, warps=warps, warped=warped,
                                rows=models.warped)


def chosen_states(posterior, n_chosen: int):
    """Each source's ``n_chosen`` most probable states per frame (most probable first), ``(T, K, M)``."""
    marginals = posterior.marginals()
    n_chosen = min([n_chosen] + [int(m.shape[1]) for m in marginals])
    return jnp.stack([jax.lax.top_k(m, n_chosen)[1] for m in marginals], axis=1)


def binary(masks: np.ndarray) -> np.ndarray:
    """One-hot masks ``(K, T, F)`` keeping the largest of ``masks`` per bin."""
    winner = np.argmax(masks, axis=0)
    return (np.arange(masks.shape[0])[:, None, None] == winner[None]).astype(np.float32)


SOFT_MASKS = {"wiener": (wiener, "expectation"), "dominance": (dominance, "joint"), "blend": (blend, "joint")}


def choose(soft_mask: str, dictionary_size: int, dictionary_states: int = 1, warps: tuple = (),
           warped: tuple = ()) -> MaskChoice:
    """The mask of a separator: state dictionaries when it has them (``dictionary_states`` states per
    source and frame; the sources numbered in ``warped`` under each frame's best of the pitch
    ``warps``, ``state_nmf.dictionary_masks``), else its soft mask."""
    if dictionary_size:
        return MaskChoice(partial(dictionary, n_chosen=dictionary_states, warps=warps, warped=warped), "marginals",
                          shares=False, magnitude=True)
    make, form = SOFT_MASKS[soft_mask]
    return MaskChoice(make, form, shares=soft_mask != "dominance", magnitude=False)


@jax.jit
def wiener_shares(psd):
    """Every source but the last one's share of the joint state's power,
    ``V_k[s_k, f] / sum_j V_j[s_j, f]``, ``(prod N, (K - 1) F)`` (source-major columns), from K
    power spectra ``(N_k, F)``: what the posterior over joint states weights into Wiener gains."""
    n_bins = psd[0].shape[1]
    n_states = tuple(p.shape[0] for p in psd)
    total = joint_sum(psd).reshape(-1, n_bins)  # (P, F)
    shares = []
    for k, own in enumerate(psd[:-1]):
        shape = [1] * len(psd) + [n_bins]
        shape[k] = own.shape[0]
        shares.append(jnp.broadcast_to(own.reshape(shape), n_states + (n_bins,)).reshape(-1, n_bins) / total)
    return jnp.concatenate(shares, axis=1)


@jax.jit(static_argnames=("n_bins",))
def _gains_from_shares(expected, n_bins: int):
    """Gains ``(K, T, F)`` from the posterior-expected shares of the first K - 1 sources,
    ``(T, (K - 1) F)`` as ``wiener_shares`` lays them out: the last gain is the remainder, all
    clipped to [0, 1]."""
    own = jnp.moveaxis(expected.reshape(expected.shape[0], -1, n_bins), 1, 0)  # (K - 1, T, F)
    return jnp.clip(jnp.concatenate([own, 1.0 - jnp.sum(own, axis=0, keepdims=True)]), 0.0, 1.0)


@jax.jit
def _expected_power_ratio(marginals, psd):
    """``E_q[V_k] / sum_j E_q[V_j]`` ``(K, T, F)`` under per-source marginals K x ``(T, N_k)``."""
    expected = jnp.stack([m @ v for m, v in zip(marginals, psd)])
    return expected / jnp.sum(expected, axis=0, keepdims=True)


@jax.jit
def _dominance_from_joint(joint, log_mag, means, variances):
    """Dominance masks ``(K, T, D)`` from a posterior over joint states ``joint (T, prod N)`` and the
    log-max model frames ``log_mag (T, D)``; ``means``, ``variances``: K arrays ``(N_k, D)``.
    The ``(T, prod N, D)`` dominance terms are made chunk by chunk of frames."""
    n_frames, n_bins = log_mag.shape
    pad = (-n_frames) % DOMINANCE_CHUNK
    joint = jnp.pad(joint, ((0, pad), (0, 0))).reshape(-1, DOMINANCE_CHUNK, joint.shape[1])
    frames = jnp.pad(log_mag, ((0, pad), (0, 0))).reshape(-1, DOMINANCE_CHUNK, n_bins)

    def one(args):
        post, chunk = args
        log_pdf, log_cdf = logmax_terms(chunk, means, variances)
        if len(means) == 2:  # source 1 dominates with probability sigmoid(a_1 - a_2); source 2 takes the rest
            # laid out (C, D, N1, N2) so the fused reduction runs over the minor axes (faster on XLA-CPU);
            # sigmoid(x) = (1 + tanh(x / 2)) / 2 with the weights' half-sum taken out of the reduction
            a = [jnp.swapaxes(p - c, 1, 2) for p, c in zip(log_pdf, log_cdf)]  # (C, D, N_k)
            half = 0.5 * (a[0][:, :, :, None] - a[1][:, :, None, :])
            weights = post.reshape(post.shape[0], 1, means[0].shape[0], -1)
            total = jnp.sum(post, axis=1, keepdims=True)
            mask = 0.5 * (total + jnp.sum(weights * jnp.tanh(half), axis=(2, 3)))
            return jnp.stack([mask, total - mask])
        dom = logmax_dominance(log_pdf, log_cdf)  # (K, C, N_1, ..., N_K, D)
        dom = dom.reshape(dom.shape[0], DOMINANCE_CHUNK, -1, n_bins)
        return jnp.einsum("cp,kcpf->kcf", post, dom)

    masks = jax.lax.map(one, (joint, frames))  # (n_chunks, K, C, D)
    return jnp.moveaxis(masks, 1, 0).reshape(len(means), -1, n_bins)[:, :n_frames]
