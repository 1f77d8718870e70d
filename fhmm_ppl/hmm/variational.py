"""Structured mean-field inference for factorial HMMs (Ghahramani & Jordan 1997).

The posterior over the K chains is approximated by K independent HMMs,
``q(S) = prod_k q_k(S_k)``; chain ``k`` keeps its true initial and transition
probabilities and gets variational log-emissions ``log h_{k,t}(s_k)``. The
coordinate-ascent update is

    log h_{k,t}(i) = E_{q_{-k}}[ log p(y_t | s_t) | s_{t,k} = i ],

after which chain k is smoothed exactly by the one-chain forward-backward. The
evidence lower bound is

    ELBO = E_q[sum_t log p(y_t | s_t)] - sum_{k,t} E_{q_k}[log h_{k,t}] + sum_k log Z_k,

with ``log Z_k`` the one-chain log marginal under ``h_k``. Each update can only
raise the ELBO; ``ELBO <= log p(y)`` always. One sweep costs
``O(T * sum_k N_k^2)`` for the chains plus the expectations: ``O(T * prod(N))``
for a dense log-likelihood tensor, or linear in K when an emission model
supplies its own expectations (``expected_log_lik``).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax

from fhmm_ppl.hmm._validate import state_shape, validate
from fhmm_ppl.hmm.filtering import mask_padding
from fhmm_ppl.hmm.smoothing import identity, smooth


class MeanFieldResult(NamedTuple):
    """Result of structured mean-field inference.

    Attributes:
        marginals: K arrays ``(T, N_k)``: q(s_{t,k}).
        trans_counts: K arrays ``(N_k, N_k)``: expected transition counts under q.
        elbo: ``()`` final evidence lower bound.
        elbo_history: ``(n_iter,)`` ELBO after each sweep over all chains.
    """

    marginals: tuple[Array, ...]
    trans_counts: tuple[Array, ...]
    elbo: Array
    elbo_history: Array


#: Floor for impossible joint states in mean field's dense expectations (finite in float32 sums).
IMPOSSIBLE_LOG_LIK = -1e30


def dense_expected_log_lik(log_lik: Array, marginals: Sequence[Array], k: int) -> Array:
    """``E_{q_{-k}}[log_lik_t(s) | s_k]`` for a dense tensor.

    Args:
        log_lik: ``(T, N_1, ..., N_K)``; marginals: K arrays ``(T, N_k)``.

    Returns:
        ``(T, N_k)``.
    """
    letters = "abcdefghijklmnopqrsuvwxyz"[: len(marginals)]
    operands = [log_lik]
    subscripts = ["t" + letters]
    for j, marg in enumerate(marginals):
        if j != k:
            operands.append(marg)
            subscripts.append("t" + letters[j])
    return jnp.einsum(",".join(subscripts) + "->t" + letters[k], *operands)


def _single_chain(log_init_k, log_trans_k, log_h, length):
    n_frames = log_h.shape[0]
    length = n_frames if length is None else length
    post = smooth((log_init_k,), (log_trans_k,), identity, log_h[None], length, 1, n_frames, True, False)
    return post.marginals[0], post.trans_counts[0], post.log_marginal


@partial(jax.jit, static_argnames=("expected_log_lik", "n_iter"))
def _mean_field(log_init, log_trans, data, key, expected_log_lik, n_iter, init_marginals=None, length=None):
    n_chains = len(log_init)
    n_frames = jax.tree_util.tree_leaves(data)[0].shape[0]
    keys = jax.random.split(key, n_chains)
    if init_marginals is None:
        marginals = tuple(
            jax.random.dirichlet(keys[k], jnp.ones(v.shape[0]), (n_frames,)) for k, v in enumerate(log_init)
        )
    else:
        marginals = tuple(jnp.asarray(m, jnp.float32) for m in init_marginals)
    counts = tuple(jnp.zeros_like(m) for m in log_trans)
    log_h = tuple(jnp.zeros((n_frames, v.shape[0])) for v in log_init)
    log_z = tuple(jnp.zeros(()) for _ in log_init)

    def sweep(state, _):
        marginals, counts, log_h, log_z = state
        marginals, counts, log_h, log_z = list(marginals), list(counts), list(log_h), list(log_z)
        for k in range(n_chains):
            # padded frames get log h = 0 (no observation), so they add nothing to the ELBO
            log_h[k] = mask_padding(expected_log_lik(data, tuple(marginals), k), length)
            marginals[k], counts[k], log_z[k] = _single_chain(log_init[k], log_trans[k], log_h[k], length)
        # E_q[log p(y|s)] equals sum_t sum_i q_K(i) log h_K(i) right after chain K's update.
        weighted = lambda m, h: jnp.sum(jnp.where(m > 0, m * h, 0.0))  # 0 log 0 = 0
        expected_ll = weighted(marginals[-1], log_h[-1])
        entropy_terms = sum(weighted(m, h) for m, h in zip(marginals, log_h))
        elbo = expected_ll - entropy_terms + sum(log_z)
        return (tuple(marginals), tuple(counts), tuple(log_h), tuple(log_z)), elbo

    (marginals, counts, _, _), history = lax.scan(sweep, (marginals, counts, log_h, log_z), None, length=n_iter)
    return MeanFieldResult(marginals=marginals, trans_counts=counts, elbo=history[-1], elbo_history=history)


def _dense_expectation(log_lik, marginals, k):
    return dense_expected_log_lik(log_lik, marginals, k)


def structured_mean_field(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik: Optional[Array] = None,
    *,
    expected_log_lik: Optional[Callable] = None,
    data=None,
    n_iter: int = 20,
    key: Optional[Array] = None,
    init_marginals: Optional[Sequence[Array]] = None,
    length: Optional[Array] = None,
) -> MeanFieldResult:
    """Approximate per-chain posteriors and an ELBO by structured mean field.

    Give either a dense ``log_lik (T, N_1, ..., N_K)``, or an emission-specific
    ``expected_log_lik(data, marginals, k) -> (T, N_k)`` (a hashable function,
    e.g. module-level) together with its ``data`` pytree: the latter never
    builds the joint-state tensor, so the cost is linear in K.

    Args:
        log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``.
        n_iter: sweeps over all chains.
        key: PRNG key for the random initial marginals (default ``PRNGKey(0)``).
        init_marginals: K arrays ``(T, N_k)`` to start from instead of random ones. Coordinate
            ascent finds a local optimum; with a loose ``expected_log_lik`` bound, where it starts
            matters (see ``separation.emissions.complex_gaussian._informed_marginals``).
        length: optional int scalar; frames ``t >= length`` are padding: they observe nothing,
            so every other frame's marginals, the counts and the ELBO are those of the first
            ``length`` frames alone (random initial marginals aside, which are drawn for all
            ``T``: give ``init_marginals`` for results that do not depend on the padding).

    Returns:
        ``MeanFieldResult``; ``elbo <= log_marginal`` of the exact model. NaN log-likelihoods
        give NaN marginals and ELBO. A dense ``log_lik``'s ``-inf`` entries are floored at
        ``IMPOSSIBLE_LOG_LIK`` (q gives them zero mass where it can), so on impossible data
        the ELBO is ``-inf`` or about that floor.
    """
    if (log_lik is None) == (expected_log_lik is None):
        raise ValueError("give exactly one of log_lik (dense tensor) or expected_log_lik (with data)")
    n_frames = (log_lik if log_lik is not None else jax.tree_util.tree_leaves(data)[0]).shape[0]
    validate(log_init, log_trans, tuple(log_lik.shape) if log_lik is not None else (n_frames,) + state_shape(log_init),
             length)
    key = jax.random.PRNGKey(0) if key is None else key
    if log_lik is not None:
        # Impossible joint states (log-likelihood -inf) get a finite floor: the expectations over other
        # chains would otherwise meet 0 * -inf = NaN. Updated marginals give such states exactly zero mass.
        expected_log_lik, data = _dense_expectation, jnp.maximum(log_lik, IMPOSSIBLE_LOG_LIK)
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1 sweep, got {n_iter}")
    if init_marginals is not None:
        init_marginals = tuple(init_marginals)
        want = [(n_frames, int(v.shape[0])) for v in log_init]
        if [tuple(m.shape) for m in init_marginals] != want:
            raise ValueError(f"init_marginals must be K arrays of shapes {want}, got {[tuple(m.shape) for m in init_marginals]}")
    return _mean_field(tuple(log_init), tuple(log_trans), data, key, expected_log_lik, n_iter, init_marginals, length)
