"""Exact smoothing of a factorial HMM: forward filter, then Rabiner's scaled backward recursion.

Memory: forward messages are stored only inside a *chunk* of ``C`` frames (see
``_chunks``); the log-likelihoods themselves can be produced per chunk too
(``posteriors_chunked``), so ``(T, prod(N))`` is never materialised.

The backward recursion scales each message by the forward pass's frame totals,
so it must follow the forward pass; ``two_filter`` has the variant whose two
passes run at the same time.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax

from fhmm_ppl.hmm._chunks import chunk_boundaries, to_chunks
from fhmm_ppl.hmm._factored import chain_marginals, pairwise_chain_counts, propagate_backward
from fhmm_ppl.hmm._validate import state_shape, validate
from fhmm_ppl.hmm.filtering import log_normaliser, predict, scaled_likelihoods, transitions, update
from fhmm_ppl.hmm.planning import choose_chunk_size


class Posteriors(NamedTuple):
    """Result of exact smoothing.

    Attributes:
        log_marginal: ``()`` log p(y_{1:T}).
        marginals: K arrays ``(T, N_k)``: p(s_{t,k} | y_{1:T}).
        trans_counts: K arrays ``(N_k, N_k)`` of expected transition counts
            ``sum_t p(s_{t-1,k}=i, s_{t,k}=j | y)``, or ``None`` if not requested.
        joint: ``(T, N_1, ..., N_K)`` joint posteriors, or ``None`` if not requested.
    """

    log_marginal: Array
    marginals: tuple[Array, ...]
    trans_counts: Optional[tuple[Array, ...]]
    joint: Optional[Array]


def smooth(log_init, log_trans, chunk_log_lik, xs_chunks, length, n_chunks, chunk, want_counts, want_joint):
    """The smoother's kernel (traceable; inputs trusted): ``Posteriors`` over ``n_chunks * chunk`` frames.

    Args:
        chunk_log_lik: ``chunk_log_lik(x_chunk) -> (chunk, N_1, ..., N_K)`` log-likelihoods.
        xs_chunks: pytree with leading axes ``(n_chunks, chunk)``.
        length: frames ``t >= length`` are padding (observed nothing).
    """
    dyn = transitions(log_init, log_trans)
    trans = dyn.trans
    shape = dyn.prior.shape
    n_chains = len(trans)
    t_chunks = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

    def chunk_filter(alpha_before, x_chunk, t_chunk):
        valid = (t_chunk < length).reshape((-1,) + (1,) * n_chains)
        lik, shift = scaled_likelihoods(jnp.where(valid, chunk_log_lik(x_chunk), 0.0))

        def inner(alpha, frame):
            lik_t, t = frame
            alpha, total = update(jnp.where(t == 0, dyn.prior, predict(alpha, dyn)), lik_t)
            return alpha, (alpha, total)

        alpha_end, (alphas, totals) = lax.scan(inner, alpha_before, (lik, t_chunk))
        return alpha_end, alphas, lik, totals, log_normaliser(totals, shift)

    def fwd_only(alpha, xs):
        x_chunk, t_chunk = xs
        return chunk_filter(alpha, x_chunk, t_chunk)[0], None

    alpha_starts = chunk_boundaries(fwd_only, dyn.prior, (xs_chunks, t_chunks), n_chunks)
    zero_counts = tuple(jnp.zeros_like(m) for m in trans)

    def backward_chunk(carry, xs):
        beta_end, counts = carry
        x_chunk, t_chunk, alpha_before = xs
        _, alphas, liks, totals, log_norm = chunk_filter(alpha_before, x_chunk, t_chunk)
        alphas_prev = jnp.concatenate([alpha_before[None], alphas[:-1]], axis=0)
        totals = jnp.where(totals == 0, 1.0, totals)

        def inner_bwd(carry_b, frame):
            # beta / total first: lik_t reaches exp(LIK_HEADROOM) and beta ~ 1 / alpha for
            # unlikely states, so their product alone could overflow float32.
            beta, acc = carry_b
            alpha_t, alpha_prev, lik_t, total_t, t = frame
            gamma = alpha_t * beta
            weight = lik_t.reshape(shape) * (beta / total_t)
            if want_counts:
                use = ((t > 0) & (t < length)).astype(gamma.dtype)
                step_counts = pairwise_chain_counts(alpha_prev, weight, trans)
                acc = tuple(a + use * c for a, c in zip(acc, step_counts))
            return (propagate_backward(weight, trans), acc), gamma

        (beta_start, counts), gammas = lax.scan(
            inner_bwd, (beta_end, counts), (alphas, alphas_prev, liks, totals, t_chunk), reverse=True
        )
        # Renormalised (sum(alpha * beta) is one only up to rounding where float32 products
        # underflow) and marginalised per chain for the whole chunk at once, outside the scan.
        state_axes = tuple(range(1, n_chains + 1))
        gamma_totals = jnp.sum(gammas, axis=state_axes, keepdims=True)
        gammas = gammas / jnp.where((gamma_totals > 0) & jnp.isfinite(gamma_totals), gamma_totals, 1.0)
        marg = tuple(chain_marginals(gammas, n_chains, first_axis=1))
        return (beta_start, counts), (marg, gammas if want_joint else None, log_norm)

    (_, counts), (marg, joint, log_norms) = lax.scan(
        backward_chunk, (jnp.ones_like(dyn.prior), zero_counts), (xs_chunks, t_chunks, alpha_starts), reverse=True
    )
    log_z = log_norms.sum()
    # The package's policy, set rather than computed: behind a zero or NaN frame total the
    # backward messages are not scaled and may overflow (inf, not NaN or zero).
    fill = jnp.where(jnp.isnan(log_z), jnp.nan, 0.0)
    settle = lambda a: jnp.where(log_z > -jnp.inf, a, fill)
    flat = lambda a: settle(a.reshape((n_chunks * chunk,) + a.shape[2:]))
    return Posteriors(
        log_marginal=log_z,
        marginals=tuple(flat(m) for m in marg),
        trans_counts=tuple(settle(c) for c in counts) if want_counts else None,
        joint=flat(joint) if want_joint else None,
    )


@partial(jax.jit, static_argnames=("chunk_log_lik", "n_frames", "chunk", "want_counts", "want_joint"))
def _posteriors(log_init, log_trans, data, params, length, chunk_log_lik, n_frames, chunk, want_counts, want_joint):
    n_chunks = -(-n_frames // chunk)
    xs_chunks = jax.tree_util.tree_map(lambda a: to_chunks(a, n_chunks, chunk), data)
    length = n_frames if length is None else jnp.minimum(length, n_frames)
    post = smooth(log_init, log_trans, lambda x: chunk_log_lik(x, params), xs_chunks, length, n_chunks, chunk,
                  want_counts, want_joint)
    cut = lambda a: a[:n_frames]
    return post._replace(
        marginals=tuple(cut(m) for m in post.marginals),
        joint=None if post.joint is None else cut(post.joint),
    )


def identity(x):
    """``chunk_log_lik`` for log-likelihoods that are already the chunk's data."""
    return x


def _dense(x, params):
    del params
    return x


def posteriors(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik: Array,
    length: Optional[Array] = None,
    *,
    trans_counts: bool = False,
    joint: bool = False,
    chunk_size: Optional[int] = None,
) -> Posteriors:
    """Exact smoothed posteriors of a factorial HMM (forward-backward).

    Args:
        log_init: K arrays ``(N_k,)``.
        log_trans: K arrays ``(N_k, N_k)`` (rows: from, columns: to).
        log_lik: ``(T, N_1, ..., N_K)`` frame log-likelihoods.
        length: optional int scalar; frames ``t >= length`` are padding: their posteriors
            are returned but meaningless, and they add no transition counts.
        trans_counts: also return per-chain expected transition counts (EM needs them).
        joint: also return the joint posterior ``(T, N_1, ..., N_K)``.
        chunk_size: frames per checkpointed chunk; by default chosen from
            ``DEFAULT_MESSAGE_BYTES`` (one chunk when everything fits).

    Returns:
        ``Posteriors`` with per-chain marginals K x ``(T, N_k)``. Cost
        ``O(T * prod(N) * sum(N))`` time (one extra forward pass when chunked).
    """
    shape = tuple(jnp.shape(log_lik))
    validate(log_init, log_trans, shape, length, chunk_size)
    chunk = chunk_size or choose_chunk_size(shape[0], math.prod(shape[1:]))
    return _posteriors(
        tuple(log_init), tuple(log_trans), log_lik, None, length, _dense, shape[0], min(chunk, shape[0]),
        trans_counts, joint,
    )


def posteriors_chunked(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    chunk_log_lik: Callable[[Array, object], Array],
    observations: Array,
    params: object = None,
    length: Optional[Array] = None,
    *,
    trans_counts: bool = False,
    joint: bool = False,
    chunk_size: Optional[int] = None,
) -> Posteriors:
    """Exact smoothing where the joint log-likelihoods are computed chunk by chunk.

    Use this when ``(T, prod(N))`` log-likelihoods would not fit in memory: only
    ``(C, prod(N))`` exist at once.

    Args:
        chunk_log_lik: ``chunk_log_lik(observations (C, ...), params) -> (C, N_1, ..., N_K)``.
            A static argument of the jitted kernel, so it must be hashable (a
            module-level function, or a frozen emission family's bound method);
            arrays go in ``params``, which is traced.
        observations: ``(T, ...)`` frames fed to ``chunk_log_lik``.
        params: pytree of arrays passed to ``chunk_log_lik`` (emission parameters).

    Returns:
        as ``posteriors``.
    """
    n_states = state_shape(log_init)
    n_frames = int(jnp.shape(observations)[0])
    validate(log_init, log_trans, (n_frames,) + n_states, length, chunk_size)
    chunk = chunk_size or choose_chunk_size(n_frames, math.prod(n_states))
    return _posteriors(
        tuple(log_init), tuple(log_trans), observations, params, length, chunk_log_lik, n_frames,
        min(chunk, n_frames), trans_counts, joint,
    )
