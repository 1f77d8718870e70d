"""Expectation-maximisation (Baum-Welch) with a MAP M-step under the model's priors.

The E-step is the exact smoother (``fhmm_ppl.hmm.posteriors``) over a padded
batch of sequences; the M-step is closed form for conjugate priors (the
family's ``m_step``; the Dirichlet mode for probabilities). Means are updated
before variances given the old variances (an ECM step), so the objective,
``log p(theta) + sum_b log p(y_b | theta)``, cannot decrease; a decrease is
reported as a ``RuntimeWarning`` and recorded, never hidden. States that no
frame visits are restarted from a data frame (recorded too), variances keep
floors, and rows with no counts fall back to their prior, never to zeros.

EM here trains one chain (one source's HMM); factorial models with several
chains are trained by SVI on the same NumPyro model.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fhmm_ppl.hmm import posteriors
from fhmm_ppl.models.fhmm import FHMMParams, FHMMSpec, log_prior
from fhmm_ppl.models.priors import map_update
from fhmm_ppl.train.batching import pad_sequences

#: Relative change below which a decrease is float32 rounding, not a real decrease: the objective
#: sums T * D terms in float32, whose rounding error grows to about 1e-5 of their magnitude.
FLOAT32_SLACK = 2e-5


def rounding_slack(value: float, n_terms: int) -> float:
    """How far an EM objective ``value`` summed from ``n_terms`` float32 terms may fall by rounding alone.

    The error scales with the sum of the terms' magnitudes, not with their total: log-densities of
    both signs (log-mel states) can add up to a small objective while each term is of order one or
    more, so ``n_terms`` stands in for that sum where it exceeds ``|value|``.
    """
    return FLOAT32_SLACK * max(abs(value), float(n_terms)) + 1e-3


class EMResult(NamedTuple):
    """Outcome of EM.

    Attributes:
        params: the final ``FHMMParams``.
        objective: ``(n_iter,)`` log posterior at the start of each iteration.
        log_likelihood: ``(n_iter,)`` total log marginal likelihood at the same points.
        converged: whether the objective changed by less than ``tol``.
        decreases: ``(iteration, amount)`` for every unexpected decrease.
        reinitialised: ``(iteration, number of states)`` for every restart of unvisited states.
    """

    params: FHMMParams
    objective: np.ndarray
    log_likelihood: np.ndarray
    converged: bool
    decreases: list
    reinitialised: list


def initial_params(spec: FHMMSpec, sequences: Sequence[np.ndarray], seed: int = 0) -> FHMMParams:
    """Seeded k-means emissions, uniform initial and transition probabilities (one chain)."""
    frames = np.concatenate([np.asarray(s) for s in sequences], axis=0)
    n = spec.n_states[0]
    emission = spec.family.initialise(frames, n, seed)
    return FHMMParams((jnp.full(n, 1.0 / n),), (jnp.full((n, n), 1.0 / n),), emission)


@partial(jax.jit, static_argnames=("family",))
def _e_step(params: FHMMParams, family, batch, lengths):
    log_init, log_trans = params.log_init, params.log_trans

    def one(obs, length):
        post = posteriors(log_init, log_trans, family.log_lik(obs, params.emission), length, trans_counts=True)
        valid = (jnp.arange(obs.shape[0]) < length)[:, None]
        return post.log_marginal, post.marginals[0] * valid, post.trans_counts[0]

    log_marg, gamma, trans_counts = jax.vmap(one)(batch, lengths)
    stats = family.statistics(batch, gamma)
    return log_marg.sum(), gamma[:, 0].sum(0), trans_counts.sum(0), stats


def fit_em(
    sequences: Sequence[np.ndarray],
    spec: FHMMSpec,
    *,
    init: Optional[FHMMParams] = None,
    max_iter: int = 100,
    tol: float = 1e-2,
    seed: int = 0,
    dead_threshold: float = 1e-3,
    progress: bool = False,
    callback=None,
) -> EMResult:
    """Fit a one-chain HMM by EM (Baum-Welch, MAP M-step).

    Args:
        sequences: feature sequences ``(T_b, D)`` (lengths may differ).
        spec: model spec with ``n_states == (N,)``; its priors must be conjugate.
        init: starting parameters (default: ``initial_params(spec, sequences, seed)``).
        max_iter: iteration cap; tol: stop when the objective changes by less.
        dead_threshold: expected visits below which a state is restarted.
        progress: show a tqdm progress bar.
        callback: called as ``callback(iteration, objective)`` after each E-step.

    Returns:
        ``EMResult``.

    Raises:
        ValueError: several chains, or a prior without a closed-form MAP update.
    """
    if spec.n_chains != 1:
        raise ValueError(
            f"EM trains one chain; this spec has {spec.n_chains}. Train each source's HMM separately "
            "or use SVI (fit_svi) for a factorial model"
        )
    batch, lengths = pad_sequences(sequences)
    dim = batch.shape[-1]
    params = init if init is not None else initial_params(spec, sequences, seed)
    rng = np.random.default_rng(seed)
    frames = np.concatenate([np.asarray(s, np.float32) for s in sequences], axis=0)
    objective, log_lik, decreases, restarts = [], [], [], []
    converged = False
    restarted_last = False
    bar = None
    if progress:
        bar = tqdm(total=max_iter, desc="EM", unit="it")
    for iteration in range(max_iter):
        total, init_counts, trans_counts, stats = _e_step(params, spec.family, batch, lengths)
        value = float(total + _log_prior(params, spec, dim))
        objective.append(value)
        log_lik.append(float(total))
        if callback is not None:
            callback(iteration, value)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(objective=f"{value:.4g}")
        if not np.isfinite(value):
            raise FloatingPointError(f"EM objective became {value} at iteration {iteration}; check the data for NaN/inf")
        if iteration > 0:
            change = value - objective[-2]
            if change < -rounding_slack(value, frames.size) and not restarted_last:
                decreases.append((iteration, -change))
                warnings.warn(
                    f"EM objective decreased by {-change:.4g} at iteration {iteration} "
                    "(numerical precision or a non-monotone custom prior)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if abs(change) < tol and not restarted_last:
                converged = True
                break
        params = _m_step(params, spec, init_counts, trans_counts, stats)
        dead = np.asarray(stats["weight"]) < dead_threshold
        restarted_last = bool(dead.any())
        if restarted_last:
            picks = jnp.asarray(frames[rng.integers(0, frames.shape[0], size=dead.shape[0])])
            emission = spec.family.reinitialise(params.emission, jnp.asarray(dead), picks, stats)
            params = params._replace(emission=emission)
            restarts.append((iteration, int(dead.sum())))
    if bar is not None:
        bar.close()
    return EMResult(params, np.array(objective), np.array(log_lik), converged, decreases, restarts)


@partial(jax.jit, static_argnames=("spec", "dim"))
def _log_prior(params: FHMMParams, spec: FHMMSpec, dim: int):
    return log_prior(params, spec, dim)


@partial(jax.jit, static_argnames=("spec",))
def _m_step(params: FHMMParams, spec: FHMMSpec, init_counts, trans_counts, stats) -> FHMMParams:
    init = map_update(spec.initial_prior, "initial", counts=init_counts)
    trans = map_update(spec.transition_prior, "transition", counts=trans_counts)
    emission = spec.family.m_step(stats, params.emission, spec.emission_priors)
    return FHMMParams((init,), (trans,), emission)
