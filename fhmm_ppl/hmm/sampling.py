"""Sampling joint state paths: from the prior and from the exact posterior (FFBS)."""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax

from fhmm_ppl.hmm._factored import joint_log_initial
from fhmm_ppl.hmm._validate import validate
from fhmm_ppl.hmm.filtering import forward_filter, log_normaliser, scaled_likelihoods, transitions


@partial(jax.jit, static_argnames=("n_frames",))
def _sample_prior(key, log_init, log_trans, n_frames):
    paths = []
    for k, (vec, mat) in enumerate(zip(log_init, log_trans)):
        key_k = jax.random.fold_in(key, k)
        first = jax.random.categorical(jax.random.fold_in(key_k, 0), vec)

        def step(state, step_key, mat=mat):
            nxt = jax.random.categorical(step_key, mat[state])
            return nxt, nxt

        _, rest = lax.scan(step, first, jax.random.split(jax.random.fold_in(key_k, 1), n_frames - 1))
        paths.append(jnp.concatenate([first[None], rest]))
    return jnp.stack(paths, axis=1).astype(jnp.int32)


def sample_prior(key: Array, log_init: Sequence[Array], log_trans: Sequence[Array], n_frames: int) -> Array:
    """Draw one joint state path from the Markov chains' prior.

    Args:
        key: PRNG key; log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``.
        n_frames: T.

    Returns:
        ``(T, K)`` int32 path.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    return _sample_prior(key, tuple(log_init), tuple(log_trans), n_frames)


@jax.jit
def _sample_posterior(key, log_init, log_trans, log_lik):
    state_shape = log_lik.shape[1:]
    n_frames = log_lik.shape[0]
    lik, shift = scaled_likelihoods(log_lik)
    _, (first, others), totals = forward_filter(transitions(log_init, log_trans), lik)
    alphas = jnp.concatenate([first, others]).reshape(log_lik.shape)
    keys = jax.random.split(key, n_frames)

    def draw(weights, step_key):
        flat = jnp.log(weights.reshape(-1))
        index = jax.random.categorical(step_key, flat)
        return jnp.stack(jnp.unravel_index(index, state_shape)).astype(jnp.int32)

    last = draw(alphas[-1], keys[-1])

    def back(s_next, frame):
        alpha_t, step_key = frame
        to_next = jnp.exp(joint_log_initial([m[:, s_next[k]] for k, m in enumerate(log_trans)]))
        s_t = draw(alpha_t * to_next, step_key)
        return s_t, s_t

    _, earlier = lax.scan(back, last, (alphas[:-1], keys[:-1]), reverse=True)
    path = jnp.concatenate([earlier, last[None]], axis=0)
    return jnp.where(log_normaliser(totals, shift) > -jnp.inf, path, -1)  # no path for impossible or NaN data


def sample_posterior(key: Array, log_init: Sequence[Array], log_trans: Sequence[Array], log_lik: Array) -> Array:
    """Draw one joint path from ``p(s_{1:T} | y_{1:T})`` by forward filtering, backward sampling.

    Args:
        key: PRNG key; log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``.
        log_lik: ``(T, N_1, ..., N_K)``.

    Returns:
        ``(T, K)`` int32 path, all ``-1`` for impossible or NaN data. Stores all T filtered
        messages (``T * prod(N)`` floats).
    """
    validate(log_init, log_trans, tuple(jnp.shape(log_lik)))
    return _sample_posterior(key, tuple(log_init), tuple(log_trans), log_lik)
