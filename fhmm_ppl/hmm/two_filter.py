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
(JAX releases the GIL while a computation runs): on two cores a 64 x 64-state
joint posterior took about 60 % of the time of ``posteriors``.

Numerics as in ``exact``: likelihoods are scaled per frame with the best state at
``exp(LIK_HEADROOM)``, and every message is renormalised at every frame. The
product ``alpha_t * beta_t`` of two normalised messages can be far below one
where the filter and the future disagree (a jump the prediction held unlikely),
so both are multiplied by ``exp(40)`` first (both are at most one, so the
product stays below ``exp(80)``): values down to about 1e-72 stay representable.

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
from jax import Array, lax

from fhmm_ppl.hmm._factored import joint_initial, propagate_forward
from fhmm_ppl.hmm.exact import LIK_HEADROOM, _scaled_likelihoods_flat, _validate, posteriors
from fhmm_ppl.hmm.planning import DEFAULT_MESSAGE_BYTES
from fhmm_ppl.runtime import run_beside

#: Each message is multiplied by exp(PRODUCT_HEADROOM) before the two are multiplied.
PRODUCT_HEADROOM = 40.0


def _safe_normalise(message: Array) -> tuple[Array, Array]:
    total = message.sum()
    return message / jnp.where(total > 0, total, 1.0), total


def _log_total(totals: Array) -> Array:
    """``sum(log totals)``; ``-inf`` if a total is zero (impossible data), NaN if one is NaN."""
    return jnp.where(jnp.all(totals > 0), jnp.sum(jnp.log(totals)),
                     jnp.where(jnp.any(jnp.isnan(totals)), jnp.nan, -jnp.inf))


@jax.jit
def _scaled(log_lik):
    """Scaled likelihoods ``(T, prod(N))`` (flat: see ``exact._scaled_likelihoods_flat``) and shifts ``(T,)``."""
    return _scaled_likelihoods_flat(log_lik)


def _state_shape(log_init) -> tuple[int, ...]:
    return tuple(int(v.shape[0]) for v in log_init)


def _filter(log_init, log_trans, lik, keep: bool = True):
    """Normalised filtered messages over flat frames ``lik`` ``(T, P)``: the last message
    ``(N_1, ..., N_K)``, the first ``(1, P)`` and the others ``(T - 1, P)`` (``None`` unless
    ``keep``; kept apart so the consumer's fused kernel joins them, not a 4-byte x T x P copy)
    and the frame totals ``(T,)``."""
    shape = _state_shape(log_init)
    trans = [jnp.exp(m) for m in log_trans]
    first_trans_t = trans[0].T
    first, first_total = _safe_normalise(joint_initial([jnp.exp(v) for v in log_init]) * lik[0].reshape(shape))

    def step(alpha, lik_t):
        alpha, total = _safe_normalise(propagate_forward(alpha, trans, first_trans_t=first_trans_t)
                                       * lik_t.reshape(shape))
        return alpha, ((alpha.reshape(-1) if keep else None), total)

    last, (alphas, totals) = lax.scan(step, first, lik[1:])
    totals = jnp.concatenate([first_total[None], totals])
    return last, ((first.reshape(1, -1), alphas) if keep else None), totals


def _pull_back(log_trans, shape, lik, last, keep: bool = True):
    """The backward recursion ``beta_{t-1} = A (lik_t * beta_t)`` along every chain's axis over
    flat frames ``lik`` ``(T', P)``, from ``beta = last`` after the last of them, each message
    normalised to sum to one. Returns the first message ``(N_1, ..., N_K)``, all of them
    ``(T', P)`` (message ``t`` is the one *before* frame ``t``) and their totals ``(T',)``."""
    trans = [jnp.exp(m) for m in log_trans]
    # Transposes made once, outside the scan: measured 5-15 % faster here than propagate_backward's
    # transposes inside it (K = 2, N = 64; for the smoother's one-chain EM case it made no difference).
    back_trans = [m.T for m in trans]

    def step(beta, lik_t):  # beta_t -> beta_{t-1} = A (lik_t * beta_t)
        beta, total = _safe_normalise(propagate_forward(lik_t.reshape(shape) * beta, back_trans,
                                                        first_trans_t=trans[0]))
        return beta, ((beta.reshape(-1) if keep else None), total)

    first, (betas, totals) = lax.scan(step, last, lik, reverse=True)
    return first, betas, totals


@jax.jit
def _forward(log_init, log_trans, lik, shift):
    """Normalised filtered messages, the first ``(1, P)`` and the others ``(T - 1, P)``, and
    ``log p(y_{1:T})`` from flat frames ``(T, P)``."""
    _, alphas, totals = _filter(log_init, log_trans, lik)
    return alphas, _log_total(totals) + shift.sum()


@partial(jax.jit, static_argnums=(1,))
def _backward(log_trans, shape, lik):
    """Backward messages of frames ``0 .. T - 2`` ``(T - 1, P)``, each normalised to sum to one,
    from flat frames ``(T, P)`` (the last frame's, uniform, is ``_messages``' to add)."""
    last = jnp.full(shape, 1.0 / lik.shape[1], lik.dtype)
    _, betas, _ = _pull_back(log_trans, shape, lik[1:], last)
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
    shape = _state_shape(log_init)
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
        ``(joint (T, N_1, ..., N_K), log_marginal ())``, or ``(T, prod(N))`` with ``flat``. Impossible data give a log marginal
        of ``-inf`` (and all-zero posteriors at some frames); NaN log-likelihoods give NaN.
    """
    log_init, log_trans = tuple(log_init), tuple(log_trans)
    _validate(log_init, log_trans, tuple(jnp.shape(log_lik)))
    if 3 * 4 * log_lik.size > max_bytes:
        post = posteriors(log_init, log_trans, log_lik, joint=True)
        log_z = post.log_marginal
        # the chunked smoother leaves NaN after an impossible frame; the two passes give zeros there
        joint = jnp.where((log_z == -jnp.inf) & ~jnp.isfinite(post.joint), 0.0, post.joint)
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
    posterior out (below ``max_bytes``): the two passes' messages go straight into one product (measured on a 64 x
    64-state separation: the smoother and the product about 25 % faster than the two steps).
    Frames whose posterior is all zero (impossible data) get zeros.

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
    _validate(log_init, log_trans, tuple(jnp.shape(log_lik)))
    n_joint = math.prod(_state_shape(log_init))
    if values.ndim != 2 or values.shape[0] != n_joint:
        raise ValueError(f"values must be (prod(N), D) = ({n_joint}, D), got shape {tuple(values.shape)}")
    if 3 * 4 * log_lik.size > max_bytes:
        joint, log_z = joint_posterior(log_init, log_trans, log_lik, max_bytes=max_bytes, flat=True)
        return joint @ values, log_z
    alphas, betas, log_z = _two_passes(log_init, log_trans, log_lik)
    return _expect_passes(alphas, betas, jnp.asarray(values, jnp.float32)), log_z


# --------------------------------------------------------------------------- log marginal on two threads

#: ``log_marginal`` splits a sequence over two threads when a half holds at least this many
#: multiply-adds of factored products (frames x joint states x summed chain sizes); below it the
#: hand-over costs more than it saves (measured: neutral at T = 2000 with 16 x 16 states).
SPLIT_MIN_WORK = 2**25


def worth_two_threads(shape: tuple[int, ...]) -> bool:
    """Whether a ``(T, N_1, ..., N_K)`` problem's log marginal is faster split over two threads."""
    n_frames, n_states = shape[0], shape[1:]
    return n_frames >= 64 and n_frames // 2 * math.prod(n_states) * sum(n_states) >= SPLIT_MIN_WORK


@partial(jax.jit, static_argnums=(3,))
def _first_half(log_init, log_trans, log_lik, stop):
    """Filtered message at frame ``stop - 1`` ``(N_1, ..., N_K)`` and ``log p(y_{0:stop})``."""
    lik, shift = _scaled_likelihoods_flat(log_lik[:stop])
    last, _, totals = _filter(log_init, log_trans, lik, keep=False)
    return last, _log_total(totals) + shift.sum()


@partial(jax.jit, static_argnums=(1, 3))
def _second_half(log_trans, shape, log_lik, start):
    """Normalised ``beta`` before frame ``start`` ``(N_1, ..., N_K)`` and its log normaliser:
    ``log p(y_{start:T} | s_{start-1}) = log beta + log_norm``."""
    n_joint = math.prod(shape)
    # A pulled-back message sums to at most n_joint times the frame's best likelihood (columns of
    # a transition matrix need not sum to one): headroom lowered by log(n_joint) keeps it finite.
    lik, shift = _scaled_likelihoods_flat(log_lik[start:], LIK_HEADROOM - math.log(n_joint))
    last = jnp.full(shape, 1.0 / n_joint, lik.dtype)  # beta = 1 after the last frame, normalised
    first, _, totals = _pull_back(log_trans, shape, lik, last, keep=False)
    return first, _log_total(totals) + shift.sum() + math.log(n_joint)


@jax.jit
def _join(alpha, beta, log_first, log_second):
    """``log p(y) = log sum_s alpha(s) beta(s) + both halves' normalisers`` (headroom as ``_combine``)."""
    headroom = jnp.exp(jnp.float32(PRODUCT_HEADROOM))
    total = jnp.sum((alpha * headroom) * (beta * headroom))
    return _log_total(total[None]) - 2 * PRODUCT_HEADROOM + log_first + log_second


def split_log_marginal(log_init: Sequence[Array], log_trans: Sequence[Array], log_lik: Array) -> Array:
    """``log p(y_{1:T})`` with the sequence's first half filtered forwards on this thread and its
    second half pulled backwards on another, met in the middle: ``p(y) = sum_s alpha_m(s) beta_m(s)``
    at the last frame ``m`` of the first half. Exact, and on two cores up to twice as fast as one
    forward pass (each half is a sequential scan of its own). For concrete arrays only (called by
    ``log_marginal`` outside traces); inputs are trusted.

    Args:
        log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``;
        log_lik: ``(T, N_1, ..., N_K)`` with ``T >= 2``.

    Returns:
        ``()`` log marginal; ``-inf`` for impossible data, NaN for NaN log-likelihoods.
    """
    log_init, log_trans = tuple(log_init), tuple(log_trans)
    stop = log_lik.shape[0] // 2
    (alpha, log_first), (beta, log_second) = run_beside(
        lambda: jax.block_until_ready(_first_half(log_init, log_trans, log_lik, stop)),
        lambda: jax.block_until_ready(_second_half(log_trans, _state_shape(log_init), log_lik, stop)))
    return _join(alpha, beta, log_first, log_second)
