"""The most probable joint state path (max-product over factored transitions), and a path's score."""

from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax

from fhmm_ppl.hmm._chunks import chunk_boundaries, to_chunks
from fhmm_ppl.hmm._factored import joint_log_initial
from fhmm_ppl.hmm._validate import validate
from fhmm_ppl.hmm.planning import choose_chunk_size


def _max_propagate(delta: Array, log_trans: Sequence[Array]) -> Array:
    """``out[s'] = max_s delta[s] + sum_k log A_k[s_k, s'_k]``, one axis at a time."""
    for k, mat in enumerate(log_trans):
        moved = jnp.moveaxis(delta, k, -1)
        moved = jnp.max(moved[..., :, None] + mat, axis=-2)
        delta = jnp.moveaxis(moved, -1, k)
    return delta


@partial(jax.jit, static_argnames=("chunk",))
def _viterbi(log_init, log_trans, log_lik, length, chunk):
    n_frames = log_lik.shape[0]
    state_shape = log_lik.shape[1:]
    n_chunks = -(-n_frames // chunk)
    ll_chunks = to_chunks(log_lik, n_chunks, chunk)
    t_chunks = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)
    length = n_frames if length is None else jnp.minimum(length, n_frames)
    log_prior = joint_log_initial(log_init)

    def step(delta, frame):
        ll_t, t = frame
        new = jnp.where(t == 0, log_prior, _max_propagate(delta, log_trans)) + ll_t
        delta = jnp.where(t < length, new, delta)  # padded frames (whatever they hold) leave it as it is
        return delta, delta

    def fwd_only(delta, xs):
        end, _ = lax.scan(step, delta, xs)
        return end, None

    starts = chunk_boundaries(fwd_only, log_prior, (ll_chunks, t_chunks), n_chunks)

    def backtrack_chunk(state_next, xs):
        ll_c, t_c, delta_before = xs
        _, deltas = lax.scan(step, delta_before, (ll_c, t_c))

        def back(s_next, frame):
            delta_t, t = frame
            to_next = joint_log_initial([m[:, s_next[k]] for k, m in enumerate(log_trans)])
            scores = delta_t + jnp.where(t + 1 < length, to_next, 0.0)
            s_t = jnp.stack(jnp.unravel_index(jnp.argmax(scores), state_shape)).astype(jnp.int32)
            return s_t, s_t

        state_first, path = lax.scan(back, state_next, (deltas, t_c), reverse=True)
        return state_first, (path, jnp.max(deltas[-1]))

    init_state = jnp.zeros(len(state_shape), dtype=jnp.int32)
    _, (paths, best) = lax.scan(backtrack_chunk, init_state, (ll_chunks, t_chunks, starts), reverse=True)
    path = paths.reshape(n_chunks * chunk, len(state_shape))[:n_frames]
    # best[-1] is the best path's score: NaN for NaN data, -inf for impossible data; either way no path.
    return jnp.where(best[-1] > -jnp.inf, path, -1)


def viterbi(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik: Array,
    length: Optional[Array] = None,
    *,
    chunk_size: Optional[int] = None,
) -> Array:
    """Most probable joint state path (max-product over factored transitions).

    Args:
        log_init: K arrays ``(N_k,)``.
        log_trans: K arrays ``(N_k, N_k)``.
        log_lik: ``(T, N_1, ..., N_K)``.
        length: optional int scalar; frames ``t >= length`` repeat the last state.
        chunk_size: frames per checkpointed chunk (default: automatic).

    Returns:
        ``(T, K)`` int32 path, column k the state of chain k; all ``-1`` for impossible or NaN data.
    """
    shape = tuple(jnp.shape(log_lik))
    validate(log_init, log_trans, shape, length, chunk_size)
    chunk = chunk_size or choose_chunk_size(shape[0], math.prod(shape[1:]))
    return _viterbi(tuple(log_init), tuple(log_trans), log_lik, length, min(chunk, shape[0]))


@jax.jit
def path_log_prob(log_init: Sequence[Array], log_trans: Sequence[Array], log_lik: Array, path: Array) -> Array:
    """Log joint ``log p(y_{1:T}, s_{1:T})`` of one joint state path.

    Args:
        log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``.
        log_lik: ``(T, N_1, ..., N_K)``; path: ``(T, K)`` ints.

    Returns:
        ``()`` float.
    """
    n_frames = log_lik.shape[0]
    score = log_lik[(jnp.arange(n_frames),) + tuple(path[:, k] for k in range(path.shape[1]))].sum()
    for k, (vec, mat) in enumerate(zip(log_init, log_trans)):
        score = score + vec[path[0, k]] + mat[path[:-1, k], path[1:, k]].sum()
    return score
