"""Fixed-lag smoothing of a factorial HMM: the posterior of frame ``t - L`` given frames ``0 .. t``.

Streaming inference keeps a window of the last ``W = L + 1`` frames: their filtered messages
``alpha_u = p(s_u | y_{0:u})`` and their scaled likelihoods. When frame ``t`` arrives the filter
takes one step, and a backward pass over the window's newer frames gives

    p(s_{t-L} | y_{0:t}) ∝ alpha_{t-L} * beta_{t-L},   beta_{t-L} ∝ p(y_{t-L+1:t} | s_{t-L}),

which is exact: the same posterior as offline smoothing of frames ``0 .. t`` at frame ``t - L``.
``L = 0`` is the forward filter; ``L >= T`` (flushed at the end, ``lag_flush``) is offline smoothing.
Memory is the window, ``2 W prod(N)`` floats, whatever the sequence's length; a step costs one
filter step and ``L`` backward steps.

Numerics are those of ``filtering`` (scaled likelihoods, messages normalised at every step) and
``two_filter`` (both messages lifted by ``exp(PRODUCT_HEADROOM)`` before their product).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax

from fhmm_ppl.hmm._validate import state_shape
from fhmm_ppl.hmm.filtering import backward_filter, predict, scaled_likelihoods, transitions, update
from fhmm_ppl.hmm.two_filter import PRODUCT_HEADROOM


class LagState(NamedTuple):
    """The smoother's memory (a pytree): the window of the last ``W = L + 1`` frames, oldest first.

    Attributes:
        alphas: ``(W, prod(N))`` normalised filtered messages (zero in slots no frame has reached yet).
        liks: ``(W, prod(N))`` scaled likelihoods (one in slots no frame has reached yet).
        n_seen: ``()`` int32, frames seen so far (the first is weighed against the prior; until ``W``
            have been seen, the window's oldest slot holds no frame and no backward pass is run).
    """

    alphas: Array
    liks: Array
    n_seen: Array


def lag_state(n_states: Sequence[int], lag_frames: int) -> LagState:
    """The empty window of a smoother with a lag of ``lag_frames >= 0`` frames over ``n_states`` chains."""
    if lag_frames < 0:
        raise ValueError(f"lag_frames must be >= 0, got {lag_frames}")
    shape = (lag_frames + 1, math.prod(n_states))
    return LagState(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.asarray(0, jnp.int32))


def _posterior(alphas: Array, betas: Array) -> Array:
    """``alpha * beta`` normalised per row ``(..., P)``; an all-zero row stays zero."""
    headroom = jnp.exp(jnp.float32(PRODUCT_HEADROOM))
    joint = (alphas * headroom) * (betas * headroom)
    total = jnp.sum(joint, axis=-1, keepdims=True)
    return joint / jnp.where((total > 0) & jnp.isfinite(total), total, 1.0)


@jax.jit
def lag_advance(log_init: Sequence[Array], log_trans: Sequence[Array], state: LagState, log_lik: Array,
                valid: Array) -> tuple[LagState, Array]:
    """Feed a block of frames to the smoother, frame by frame.

    Args:
        log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)`` (rows: from, columns: to).
        state: the window (``lag_state``, or what the previous call returned).
        log_lik: ``(B, N_1, ..., N_K)`` the block's frame log-likelihoods.
        valid: ``(B,)`` bool; frames where it is false leave the window as it is (a block padded to a
            fixed size compiles once).

    Returns:
        ``(state, posteriors (B, prod(N)))``: row ``i`` is ``p(s_{t_i - L} | y_{0:t_i})`` for the
        block's frame ``t_i``; it means nothing where ``t_i < L`` (no backward pass is run for
        those, so a lag longer than the stream costs one pass, at ``lag_flush``) or the frame is
        not valid.
    """
    dyn = transitions(log_init, log_trans)
    shape = state_shape(log_init)
    lik, _ = scaled_likelihoods(log_lik)
    uniform = jnp.full(shape, 1.0 / lik.shape[1], lik.dtype)

    def step(window: LagState, inputs):
        lik_t, ok = inputs
        pred = jnp.where(window.n_seen > 0, predict(window.alphas[-1].reshape(shape), dyn), dyn.prior)
        alpha, _ = update(pred, lik_t)
        alphas = jnp.concatenate([window.alphas[1:], alpha.reshape(1, -1)])
        liks = jnp.concatenate([window.liks[1:], lik_t[None]])
        full = window.n_seen + 1 >= liks.shape[0]  # the oldest slot holds a frame: its posterior is wanted
        beta = lax.cond(ok & full, lambda: backward_filter(log_trans, shape, liks[1:], uniform, keep=False)[0],
                        lambda: uniform)
        moved = LagState(alphas, liks, window.n_seen + 1)
        window = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), moved, window)
        return window, _posterior(alphas[0], beta.reshape(-1))

    return lax.scan(step, state, (lik, valid))


@jax.jit
def lag_flush(log_trans: Sequence[Array], state: LagState) -> Array:
    """Posteriors ``(W, prod(N))`` of the window's frames given every frame seen: row ``j`` is slot
    ``j`` (the newest frame is the last row; rows of slots no frame reached mean nothing). What the
    end of a stream makes of the frames still inside the lag."""
    n_joint = state.alphas.shape[1]
    shape = tuple(int(m.shape[0]) for m in log_trans)
    uniform = jnp.full(shape, 1.0 / n_joint, state.liks.dtype)
    _, betas, _ = backward_filter(log_trans, shape, state.liks[1:], uniform)  # betas[j]: slot j's
    return _posterior(state.alphas, jnp.concatenate([betas.reshape(-1, n_joint), uniform.reshape(1, -1)]))
