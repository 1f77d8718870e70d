"""Joint posteriors by two-filter smoothing, the forward and backward passes running at once.

``posteriors`` runs Rabiner's backward recursion after the forward pass, because
it scales each backward message by the forward pass's frame totals. A backward
message scaled by *its own* total instead needs nothing from the forward pass,
so the two recursions can run concurrently (Kitagawa's two-filter smoother):

    alpha_t ∝ p(s_t | y_{1:t})          forward, each message summing to one
    beta_t  ∝ p(y_{t+1:T} | s_t)        backward, each message summing to one
    p(s_t | y_{1:T}) ∝ alpha_t * beta_t

Each pass is a sequential scan whose per-frame matrix products are too small
for XLA-CPU to spread over cores, so the backward pass runs on a second thread
(``runtime.run_beside``; JAX releases the GIL while a computation runs). The
same split gives ``log_marginal_two_threads``: the first half of a sequence
filtered forwards, the second pulled backwards, met in the middle.

The product ``alpha_t * beta_t`` of two normalised messages can be far below one
where the filter and the future disagree (a jump the prediction held unlikely),
so both are multiplied by ``exp(PRODUCT_HEADROOM)`` first (both are at most one,
so the product stays below ``exp(2 PRODUCT_HEADROOM)``).

Memory: the likelihoods and both passes' messages, three ``(T, prod(N))``
float32 tensors. ``joint_posterior`` falls back to the chunked ``posteriors``
above ``max_bytes``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import Array

from fhmm_ppl.hmm._validate import is_traced, state_shape, validate
from fhmm_ppl.hmm.filtering import (
    LIK_HEADROOM,
    backward_filter,
    forward_filter,
    log_normaliser,
    scaled_likelihoods,
    transitions,
)
from fhmm_ppl.hmm.marginal import one_thread_log_marginal
from fhmm_ppl.hmm.planning import DEFAULT_MESSAGE_BYTES
from fhmm_ppl.hmm.smoothing import posteriors
from fhmm_ppl.runtime import run_beside

#: Each message is multiplied by exp(PRODUCT_HEADROOM) before the two are multiplied.
PRODUCT_HEADROOM = 40.0


@jax.jit
def _scaled(log_lik):
    """``scaled_likelihoods`` of the whole sequence, flat ``(T, prod(N))``, and shifts ``(T,)``."""
    return scaled_likelihoods(log_lik)


@jax.jit
def _forward(log_init, log_trans, lik, shift):
    """Normalised filtered messages, the first ``(1, P)`` and the others ``(T - 1, P)``, and
    ``log p(y_{1:T})`` from flat frames ``(T, P)``."""
    _, alphas, totals = forward_filter(transitions(log_init, log_trans), lik)
    return alphas, log_normaliser(totals, shift)


@partial(jax.jit, static_argnums=(1,))
def _backward(log_trans, shape, lik):
    """Backward messages of frames ``0 .. T - 2`` ``(T - 1, P)``, each normalised to sum to one,
    from flat frames ``(T, P)`` (the last frame's, uniform, is ``_messages``' to add)."""
    last = jnp.full(shape, 1.0 / lik.shape[1], lik.dtype)
    _, betas, _ = backward_filter(log_trans, shape, lik[1:], last)
    return betas


def _messages(alphas, betas):
    """Whole ``(T, P)`` forward and backward messages from ``_forward``'s ``(first, others)`` and
    ``_backward``'s ``(T - 1, P)`` (inside a jitted consumer, where the joins fuse into its kernel)."""
    first, others = alphas
    n_joint = betas.shape[1]
    return (jnp.concatenate([first, others]),
            jnp.concatenate([betas, jnp.full((1, n_joint), 1.0 / n_joint, betas.dtype)]))


def _combine(alphas, betas):
    """Joint posteriors ``(T, P)`` from normalised forward and backward messages ``(T, P)``."""
    joint = _product(alphas, betas)
    total = jnp.sum(joint, axis=1, keepdims=True)
    return joint / jnp.where((total > 0) & jnp.isfinite(total), total, 1.0)


def _product(alphas, betas):
    """``alpha_t * beta_t`` times ``exp(2 PRODUCT_HEADROOM)``, ``(T, P)`` (see the module's notes)."""
    headroom = jnp.exp(jnp.float32(PRODUCT_HEADROOM))
    return (alphas * headroom) * (betas * headroom)


@jax.jit
def _combine_passes(alphas, betas):
    """``_combine`` of the two passes' outputs."""
    return _combine(*_messages(alphas, betas))


@jax.jit
def _expect_passes(alphas, betas, values):
    """``E[values[s_t] | y] (T, D)`` from the two passes' outputs and ``values`` ``(P, D)``.

    One product over joint states with a column of ones appended (the posterior's total rides
    along), divided afterwards: the normalised posterior is never written out. ``values`` are
    scaled to at most one per column first, so the sums stay below ``exp(2 PRODUCT_HEADROOM)``.
    """
    weights = _product(*_messages(alphas, betas))
    top = jnp.max(jnp.abs(values), axis=0)
    top = jnp.where((top > 0) & jnp.isfinite(top), top, 1.0)
    sums = weights @ jnp.concatenate([values / top, jnp.ones((values.shape[0], 1), values.dtype)], axis=1)
    total = sums[:, -1:]
    return sums[:, :-1] / jnp.where((total > 0) & jnp.isfinite(total), total, 1.0) * top


def _two_passes(log_init, log_trans, log_lik):
    """The forward pass on this thread and the backward pass on another: ``(alphas, betas, log_z)``
    as ``_forward`` and ``_backward`` give them."""
    lik, shift = _scaled(jnp.asarray(log_lik, jnp.float32))
    shape = state_shape(log_init)
    (alphas, log_z), betas = run_beside(lambda: jax.block_until_ready(_forward(log_init, log_trans, lik, shift)),
                                        lambda: jax.block_until_ready(_backward(log_trans, shape, lik)))
    return alphas, betas, log_z


def joint_posterior(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik: Array,
    *,
    max_bytes: int = DEFAULT_MESSAGE_BYTES,
    flat: bool = False,
) -> tuple[Array, Array]:
    """Exact joint posterior ``p(s_t | y_{1:T})`` and ``log p(y_{1:T})`` of a factorial HMM.

    The same numbers as ``posteriors(..., joint=True)`` (up to float32 rounding), computed by
    a forward and a backward pass that run concurrently on two threads.

    Args:
        log_init: K arrays ``(N_k,)``.
        log_trans: K arrays ``(N_k, N_k)`` (rows: from, columns: to).
        log_lik: ``(T, N_1, ..., N_K)`` frame log-likelihoods.
        max_bytes: above this many bytes for three ``(T, prod(N))`` float32 tensors, run the
            chunked ``posteriors`` instead (same result, bounded memory, one thread).
        flat: return the joint states flattened, ``(T, prod(N))`` (the passes work in that
            layout, so this saves a copy; it is what a product over joint states wants).

    Returns:
        ``(joint (T, N_1, ..., N_K), log_marginal ())``, or ``(T, prod(N))`` with ``flat``.
    """
    log_init, log_trans = tuple(log_init), tuple(log_trans)
    validate(log_init, log_trans, tuple(jnp.shape(log_lik)))
    if 3 * 4 * log_lik.size > max_bytes:
        post = posteriors(log_init, log_trans, log_lik, joint=True)
        joint, log_z = post.joint, post.log_marginal
    else:
        alphas, betas, log_z = _two_passes(log_init, log_trans, log_lik)
        joint = _combine_passes(alphas, betas)
    return joint.reshape((joint.shape[0], -1) if flat else jnp.shape(log_lik)), log_z


def posterior_expectation(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik: Array,
    values: Array,
    *,
    max_bytes: int = DEFAULT_MESSAGE_BYTES,
) -> tuple[Array, Array]:
    """Posterior means of per-joint-state vectors, ``E[values[s_t] | y_{1:T}]``, and ``log p(y_{1:T})``.

    What ``joint_posterior(..., flat=True)[0] @ values`` gives, without writing the normalised
    posterior out (below ``max_bytes``): the two passes' messages go straight into one product,
    which saves writing and reading a ``(T, prod(N))`` tensor.

    Args:
        log_init: K arrays ``(N_k,)``.
        log_trans: K arrays ``(N_k, N_k)`` (rows: from, columns: to).
        log_lik: ``(T, N_1, ..., N_K)`` frame log-likelihoods.
        values: ``(prod(N), D)``, row ``s`` belonging to the flattened joint state ``s``.
        max_bytes: as ``joint_posterior`` (above it, the chunked smoother's posterior times ``values``).

    Returns:
        ``(expectations (T, D), log_marginal ())``.
    """
    log_init, log_trans = tuple(log_init), tuple(log_trans)
    validate(log_init, log_trans, tuple(jnp.shape(log_lik)))
    n_joint = math.prod(state_shape(log_init))
    if values.ndim != 2 or values.shape[0] != n_joint:
        raise ValueError(f"values must be (prod(N), D) = ({n_joint}, D), got shape {tuple(values.shape)}")
    if 3 * 4 * log_lik.size > max_bytes:
        joint, log_z = joint_posterior(log_init, log_trans, log_lik, max_bytes=max_bytes, flat=True)
        return joint @ values, log_z
    alphas, betas, log_z = _two_passes(log_init, log_trans, log_lik)
    return _expect_passes(alphas, betas, jnp.asarray(values, jnp.float32)), log_z


# --------------------------------------------------------------------------- log marginal on two threads

#: Below this many multiply-adds of factored products in each half (frames x joint states x
#: summed chain sizes), handing a half to the helper thread costs about what it saves.
SPLIT_MIN_WORK = 2**25


def worth_two_threads(shape: tuple[int, ...]) -> bool:
    """Whether a ``(T, N_1, ..., N_K)`` problem's log marginal is worth ``log_marginal_two_threads``."""
    n_frames, n_states = shape[0], shape[1:]
    return n_frames >= 64 and n_frames // 2 * math.prod(n_states) * sum(n_states) >= SPLIT_MIN_WORK


@partial(jax.jit, static_argnums=(3,))
def _first_half(log_init, log_trans, log_lik, stop):
    """Filtered message at frame ``stop - 1`` ``(N_1, ..., N_K)`` and ``log p(y_{0:stop})``."""
    lik, shift = scaled_likelihoods(log_lik[:stop])
    last, _, totals = forward_filter(transitions(log_init, log_trans), lik, keep=False)
    return last, log_normaliser(totals, shift)


@partial(jax.jit, static_argnums=(1, 3))
def _second_half(log_trans, shape, log_lik, start):
    """Normalised ``beta`` before frame ``start`` ``(N_1, ..., N_K)`` and its log normaliser:
    ``log p(y_{start:T} | s_{start-1}) = log beta + log_norm``."""
    n_joint = math.prod(shape)
    # A pulled-back message sums to at most n_joint times the frame's best likelihood (columns of
    # a transition matrix need not sum to one): headroom lowered by log(n_joint) keeps it finite.
    lik, shift = scaled_likelihoods(log_lik[start:], LIK_HEADROOM - math.log(n_joint))
    last = jnp.full(shape, 1.0 / n_joint, lik.dtype)  # beta = 1 after the last frame, normalised
    first, _, totals = backward_filter(log_trans, shape, lik, last, keep=False)
    return first, log_normaliser(totals, shift) + math.log(n_joint)


@jax.jit
def _join(alpha, beta, log_first, log_second):
    """``log p(y) = log sum_s alpha(s) beta(s) + both halves' normalisers`` (headroom as ``_product``)."""
    headroom = jnp.exp(jnp.float32(PRODUCT_HEADROOM))
    total = jnp.sum((alpha * headroom) * (beta * headroom))
    return jnp.log(total) - 2 * PRODUCT_HEADROOM + log_first + log_second


def log_marginal_two_threads(log_init: Sequence[Array], log_trans: Sequence[Array], log_lik: Array) -> Array:
    """``log_marginal`` of one concrete sequence, its halves on two threads, met in the middle.

    The first half is filtered forwards on this thread and the second pulled backwards on the
    helper thread; ``p(y) = sum_s alpha_m(s) beta_m(s)`` at the last frame ``m`` of the first
    half. The same value as ``log_marginal`` up to float32 rounding (not bit for bit), in about
    half the time on two free cores for long sequences (see ``worth_two_threads``).

    Args:
        log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``;
        log_lik: ``(T, N_1, ..., N_K)`` concrete arrays (not inside ``jit``, ``grad`` or
            ``vmap``: each half blocks until it is done).

    Returns:
        ``()`` log marginal; ``-inf`` for impossible data, NaN for NaN data. No gradient:
        differentiate ``log_marginal``.
    """
    log_init, log_trans = tuple(log_init), tuple(log_trans)
    validate(log_init, log_trans, tuple(jnp.shape(log_lik)))
    if is_traced(log_init, log_trans, log_lik):
        raise ValueError("log_marginal_two_threads needs concrete arrays (it runs two computations on two threads); "
                         "inside jit, grad or vmap call log_marginal")
    log_lik = jnp.asarray(log_lik, jnp.float32)
    if log_lik.shape[0] < 2:
        return one_thread_log_marginal(log_init, log_trans, log_lik, None, 1)
    stop = log_lik.shape[0] // 2
    (alpha, log_first), (beta, log_second) = run_beside(
        lambda: jax.block_until_ready(_first_half(log_init, log_trans, log_lik, stop)),
        lambda: jax.block_until_ready(_second_half(log_trans, state_shape(log_init), log_lik, stop)))
    return _join(alpha, beta, log_first, log_second)
