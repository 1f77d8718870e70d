"""Exact inference for factorial HMMs: forward filtering, smoothing and Viterbi.

Every function here is pure JAX over arrays. Chains ``k = 1..K`` have ``N_k``
states; a joint state is ``s = (s_1, ..., s_K)``; transitions factor over the
chains, ``p(s_t | s_{t-1}) = prod_k A_k[s_{t-1,k}, s_{t,k}]``, and are applied
chain by chain along the axes of the ``(N_1, ..., N_K)`` message tensor, never
as a joint matrix.

Numerics: the forward and backward passes use *scaled* probability messages
(Rabiner's scaling): each frame's likelihoods are exponentiated relative to
their maximum and each filtered message is renormalised, so
``log p(y_{1:T}) = sum_t (log c_t + shift_t)`` stays finite for any T (tested
at T = 10^5) without a single logsumexp inside the scan. The best state of a
frame is given ``exp(LIK_HEADROOM)`` rather than 1: a frame's total is at most
that (the prediction sums to one), far below float32's largest number, and
states down to ``87 + LIK_HEADROOM`` nats below the best one stay
representable. With a shift of exactly the maximum, states 87 nats below it
flushed to zero; where the data then jumped to a state the prediction held
unlikely (a frame total of 1e-24 and less, common with sticky chains on STFT
frames), the mass lost was up to 1e-14 of the frame's, and later frames that
favoured those states amplified it: log marginals 5-20 nats too low and
wrong posteriors on such frames (and the backward recursion, dividing by
those tiny totals, made posteriors that summed to 1e9, or NaN).

Memory: smoothing stores one forward message per frame only inside a *chunk*.
For long or wide problems the sequence is cut into ``n`` chunks of ``C``
frames; a first pass keeps only the message at each chunk boundary, a second
pass (backwards over chunks) recomputes each chunk's messages and runs the
backward recursion over it. Peak memory is ``O((T / C + 2 C) * prod(N))``
instead of ``O(T * prod(N))``; the time cost is one extra forward pass. The
log-likelihoods themselves can also be produced per chunk (see
``posteriors_chunked``), so ``(T, prod(N))`` is never materialised.

Impossible data (every joint path has probability zero) give a log marginal
of ``-inf`` and zero gradients; ``viterbi`` and posterior sampling then return
an arbitrary path, so check the log marginal first. NaN log-likelihoods give
NaN, ``+inf`` ones are not supported.

Variable-length sequences: frames at ``t >= length`` are treated as
unobserved (log-likelihood 0), which leaves the log marginal exact; their
posteriors are returned but meaningless, and they add no transition counts.
Use ``jax.vmap`` over a padded batch with a vector of lengths.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import Array, lax

from fhmm_ppl.hmm._factored import (
    chain_marginals,
    joint_initial,
    joint_log_initial,
    pairwise_chain_counts,
    propagate_backward,
    propagate_forward,
)
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


# --------------------------------------------------------------------------- validation


def _validate(log_init: Sequence[Array], log_trans: Sequence[Array], log_lik_shape: tuple[int, ...],
              length=None, chunk_size: Optional[int] = None) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive number of frames (or None), got {chunk_size!r}")
    if length is not None and not isinstance(length, jax.core.Tracer):  # traced lengths are the caller's care
        if jnp.ndim(length) != 0:
            raise ValueError(f"length must be one int per sequence, got shape {jnp.shape(length)}; "
                             "for a batch, jax.vmap over sequences and lengths together")
        if not 0 <= int(length) <= log_lik_shape[0]:
            raise ValueError(f"length must be between 0 and the {log_lik_shape[0]} frames given, got {int(length)}")
    for name, value in (("log_init", log_init), ("log_trans", log_trans)):
        if hasattr(value, "ndim"):
            raise ValueError(f"{name} must be a list or tuple with one array per chain, got one array of shape "
                             f"{tuple(value.shape)} (for a single chain: [{name}])")
    if len(log_init) != len(log_trans):
        raise ValueError(
            f"log_init has {len(log_init)} chains but log_trans has {len(log_trans)}; give one of each per chain"
        )
    if len(log_init) == 0:
        raise ValueError("at least one chain is needed: log_init and log_trans are empty")
    n_states = tuple(int(jnp.shape(v)[0]) for v in log_init)
    for k, (vec, mat) in enumerate(zip(log_init, log_trans)):
        if jnp.ndim(vec) != 1:
            raise ValueError(f"log_init[{k}] must be 1-D (N_k,), got shape {jnp.shape(vec)}")
        if tuple(jnp.shape(mat)) != (n_states[k], n_states[k]):
            raise ValueError(
                f"log_trans[{k}] must be ({n_states[k]}, {n_states[k]}) to match log_init[{k}], got {jnp.shape(mat)}"
            )
    if len(log_lik_shape) != len(n_states) + 1 or tuple(log_lik_shape[1:]) != n_states:
        raise ValueError(f"log_lik must have shape (T, {', '.join(map(str, n_states))}), got {log_lik_shape}")
    if log_lik_shape[0] < 1:
        raise ValueError("log_lik has no frames (T = 0)")


# --------------------------------------------------------------------------- shared steps


#: The best state of each frame gets likelihood exp(LIK_HEADROOM) in the scaled recursions
#: (float32 reaches exp(88.7); a frame's total never exceeds its best state's likelihood).
LIK_HEADROOM = 80.0


def _frame_scale(log_lik_t: Array) -> tuple[Array, Array]:
    """``_scaled_likelihoods`` of one frame ``(N_1, ..., N_K)``: scaled likelihoods and the scalar shift."""
    lik, shift = _scaled_likelihoods(log_lik_t[None])
    return lik[0], shift[0]


def _filter_step(trans, prior_joint, alpha_prev, log_lik_t, t):
    """One scaled forward step. Returns (alpha_t, lik_t, c_t (safe), log normaliser)."""
    lik, shift = _frame_scale(log_lik_t)
    pred = jnp.where(t == 0, prior_joint, propagate_forward(alpha_prev, trans))
    unnorm = pred * lik
    total = unnorm.sum()
    ok = total > 0
    safe_total = jnp.where(ok, total, 1.0)
    log_norm = jnp.where(ok, jnp.log(safe_total), -jnp.inf) + shift
    return unnorm / safe_total, lik, safe_total, log_norm


def _mask_padding(log_lik: Array, length) -> tuple[Array, Array]:
    """Zero log-likelihood (no observation) at frames ``t >= length``; returns (log_lik, t)."""
    t_idx = jnp.arange(log_lik.shape[0])
    if length is None:
        return log_lik, t_idx
    valid = (t_idx < length).reshape((-1,) + (1,) * (log_lik.ndim - 1))
    return jnp.where(valid, log_lik, 0.0), t_idx


# --------------------------------------------------------------------------- log marginal


def _scaled_likelihoods(log_lik: Array) -> tuple[Array, Array]:
    """Per-frame scaled likelihoods ``exp(log_lik - shift)`` ``(T, ...)`` and shifts ``(T,)``
    (``shift = max - LIK_HEADROOM``, 0 for a frame where every state is impossible).

    Computed for all frames at once, outside the sequential scan, so the scan
    body is only the factored matrix products and one reduction.
    """
    lik, shift = _scaled_likelihoods_flat(log_lik)
    return lik.reshape(log_lik.shape), shift


def _scaled_likelihoods_flat(log_lik: Array, headroom: float = LIK_HEADROOM) -> tuple[Array, Array]:
    """``_scaled_likelihoods`` with the joint states flattened: ``(T, prod(N))`` and ``(T,)``
    (the best state of each frame at ``exp(headroom)``).

    XLA-CPU writes a ``(T, P)`` result of the subtraction and ``exp`` about twice as fast as a
    ``(T, N_1, ..., N_K)`` one (measured 0.86 against 1.8 ms at T = 2000, 32 x 32 states); scans
    take the flat frames and reshape each one (free) inside their body.
    """
    flat = log_lik.reshape(log_lik.shape[0], -1)
    top = jnp.max(flat, axis=1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, headroom)
    # (log_lik - top) first: the best state gets exactly exp(headroom), whatever float32
    # does to ``top - headroom`` when |top| is large.
    return jnp.exp(flat - top + headroom), (top - headroom).reshape(-1)


@partial(jax.jit, static_argnames=("unroll",))
def _log_marginal(log_init, log_trans, log_lik, length, unroll):
    trans = [jnp.exp(m) for m in log_trans]
    prior = joint_initial([jnp.exp(v) for v in log_init])
    log_lik, _ = _mask_padding(log_lik, length)
    lik, shift = _scaled_likelihoods_flat(log_lik)
    first_trans_t = trans[0].T

    # The carry is the filtered message, normalised every frame *before* it is
    # propagated: propagating an unnormalised message whose total is tiny lets
    # products of small transition probabilities underflow to zero in float32
    # (deferring the division to the next frame turned likely data into -inf).
    # A plain division (no guard in the loop) is the fastest; a zero total means
    # impossible data, and the NaNs it leaves behind are mapped to -inf below.
    def step(alpha, lik_t):
        unnorm = propagate_forward(alpha, trans, first_trans_t=first_trans_t) * lik_t.reshape(prior.shape)
        total = unnorm.sum()
        return unnorm / total, total

    first = prior * lik[0].reshape(prior.shape)
    first_total = first.sum()
    _, totals = lax.scan(step, first / first_total, lik[1:], unroll=unroll)
    impossible = (first_total <= 0) | jnp.any(totals <= 0)
    return jnp.where(impossible, -jnp.inf, jnp.log(first_total) + jnp.log(totals).sum() + shift.sum())


def log_marginal(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik: Array,
    length: Optional[Array] = None,
    *,
    unroll: int = 1,
) -> Array:
    """Log marginal likelihood ``log p(y_{1:T})`` of a factorial HMM.

    Args:
        log_init: K arrays ``(N_k,)``: log initial probabilities per chain.
        log_trans: K arrays ``(N_k, N_k)``: log transition probabilities
            (rows: from, columns: to).
        log_lik: ``(T, N_1, ..., N_K)`` frame log-likelihoods of every joint state.
        length: optional int scalar; frames ``t >= length`` are padding. They are
            marginalised through the transitions, which leaves the value exact because
            rows of ``exp(log_trans)`` are probabilities (they sum to one); the gradient
            treats padded frames as absent.
        unroll: frames per scan iteration (a speed knob, not a result knob).

    Returns:
        ``()`` float: the log marginal. ``-inf`` if the data are impossible.

    Cost ``O(T * prod(N) * sum(N))`` time, ``O(prod(N))`` extra memory. Called on concrete
    arrays (not inside ``jit``, ``grad`` or ``vmap``) with no ``length`` and enough work, the
    sequence is split in two halves run at once on two threads, forwards and backwards, and met
    in the middle (``two_filter.split_log_marginal``: the same value, up to float32 rounding).
    Differentiable (reverse mode, ``jax.grad``) in the log probabilities, so it
    serves SVI and MCMC. The gradient is not the autodiff of the scan: it is
    what the maths says it is, computed by the scaled smoother (``posteriors``):
    the joint posterior for ``log_lik``, expected transition counts for
    ``log_trans`` and first-frame marginals for ``log_init``. Differentiating
    through the scaled recursion divides by squared frame totals, which
    underflow for peaky likelihoods (real STFT frames) and turned finite log
    marginals into NaN gradients. Forward-mode (``jax.jvp``, Hessians) is not
    supported.
    """
    _validate(log_init, log_trans, jnp.shape(log_lik), length)
    if length is None and unroll == 1 and not _traced(log_init, log_trans, log_lik):
        from fhmm_ppl.hmm.two_filter import split_log_marginal, worth_two_threads

        if worth_two_threads(jnp.shape(log_lik)):
            return split_log_marginal(log_init, log_trans, jnp.asarray(log_lik, jnp.float32))
    return _jitted_log_marginal(tuple(log_init), tuple(log_trans), log_lik, length, unroll)


def _traced(*trees) -> bool:
    """Whether any array in ``trees`` is a tracer (inside jit, grad, vmap, ...)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _log_marginal_with_posterior_gradient(log_init, log_trans, log_lik, length, unroll):
    return _log_marginal(log_init, log_trans, log_lik, length, unroll)


def _log_marginal_fwd(log_init, log_trans, log_lik, length, unroll):
    return _log_marginal(log_init, log_trans, log_lik, length, unroll), (log_init, log_trans, log_lik, length)


def _log_marginal_bwd(unroll, residuals, cotangent):
    """d log p(y) = E[first states] . d log_init + E[transition counts] . d log_trans + joint posterior . d log_lik."""
    del unroll
    log_init, log_trans, log_lik, length = residuals
    post = posteriors(log_init, log_trans, log_lik, length, trans_counts=True, joint=True)
    joint = post.joint
    if length is not None:  # padded frames are unobserved: their log-likelihoods do not enter log p(y)
        valid = jnp.arange(joint.shape[0]) < length
        joint = jnp.where(valid.reshape((-1,) + (1,) * (joint.ndim - 1)), joint, 0.0)
    d_init = tuple(cotangent * m[0] for m in post.marginals)
    d_trans = tuple(cotangent * c for c in post.trans_counts)
    return d_init, d_trans, cotangent * joint, None


_log_marginal_with_posterior_gradient.defvjp(_log_marginal_fwd, _log_marginal_bwd)
# Called eagerly, a custom_vjp function is traced again on every call (0.5 ms of fixed cost,
# measured: 0.67 against 0.16 ms for T = 10); under jit the trace is cached.
_jitted_log_marginal = jax.jit(_log_marginal_with_posterior_gradient, static_argnums=(4,))


# --------------------------------------------------------------------------- smoothing


def _chunk_boundaries(chunk_step, carry0, xs_chunks, n_chunks):
    """Carry at the start of every chunk, from one forward pass that stores nothing else.

    ``chunk_step(carry, chunk_xs) -> (carry_at_chunk_end, _)`` runs a whole chunk.
    """
    if n_chunks == 1:
        return jax.tree_util.tree_map(lambda c: c[None], carry0)

    def outer(carry, xs):
        end, _ = chunk_step(carry, xs)
        return end, carry

    _, starts = lax.scan(outer, carry0, xs_chunks)
    return starts


def _smooth(log_init, log_trans, chunk_log_lik, xs_chunks, length, n_chunks, chunk, want_counts, want_joint):
    trans = [jnp.exp(m) for m in log_trans]
    prior = joint_initial([jnp.exp(v) for v in log_init])
    n_chains = len(trans)
    t_chunks = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

    def chunk_lik(x_chunk, t_chunk):
        ll = chunk_log_lik(x_chunk)
        valid = (t_chunk < length).reshape((-1,) + (1,) * n_chains)
        return jnp.where(valid, ll, 0.0)

    first_trans_t = trans[0].T

    def chunk_filter(alpha_before, x_chunk, t_chunk):
        # Likelihoods are exponentiated for the whole chunk at once, outside the scan.
        lik, shift = _scaled_likelihoods(chunk_lik(x_chunk, t_chunk))

        def inner(alpha, frame):
            lik_t, t = frame
            pred = jnp.where(t == 0, prior, propagate_forward(alpha, trans, first_trans_t=first_trans_t))
            unnorm = pred * lik_t
            total = unnorm.sum()
            safe = jnp.where(total > 0, total, 1.0)
            alpha = unnorm / safe
            # zero total: impossible data (-inf); NaN likelihoods stay NaN rather than pass for impossible
            log_total = jnp.where(total > 0, jnp.log(safe), jnp.where(jnp.isnan(total), jnp.nan, -jnp.inf))
            return alpha, (alpha, safe, log_total)

        alpha_end, (alphas, totals, log_totals) = lax.scan(inner, alpha_before, (lik, t_chunk))
        return alpha_end, alphas, lik, totals, log_totals + shift

    def fwd_only(alpha, xs):
        x_chunk, t_chunk = xs
        return chunk_filter(alpha, x_chunk, t_chunk)[0], None

    alpha_starts = _chunk_boundaries(fwd_only, prior, (xs_chunks, t_chunks), n_chunks)
    zero_counts = tuple(jnp.zeros_like(m) for m in trans)

    def backward_chunk(carry, xs):
        beta_end, counts = carry
        x_chunk, t_chunk, alpha_before = xs
        _, alphas, liks, totals, log_norms = chunk_filter(alpha_before, x_chunk, t_chunk)
        alphas_prev = jnp.concatenate([alpha_before[None], alphas[:-1]], axis=0)

        def inner_bwd(carry_b, frame):
            # Rabiner's scaled backward recursion. beta / total first: lik_t reaches
            # exp(LIK_HEADROOM) and beta ~ 1 / alpha for unlikely states, so their product
            # alone could overflow float32. Each frame's gamma is renormalised after the scan.
            beta, acc = carry_b
            alpha_t, alpha_prev, lik_t, total_t, t = frame
            gamma = alpha_t * beta
            weight = lik_t * (beta / total_t)
            if want_counts:
                use = ((t > 0) & (t < length)).astype(gamma.dtype)
                step_counts = pairwise_chain_counts(alpha_prev, weight, trans)
                acc = tuple(a + use * c for a, c in zip(acc, step_counts))
            beta_prev = propagate_backward(weight, trans)
            return (beta_prev, acc), gamma

        (beta_start, counts), gammas = lax.scan(
            inner_bwd, (beta_end, counts), (alphas, alphas_prev, liks, totals, t_chunk), reverse=True
        )
        # Normalised (sum(alpha * beta) is one only up to rounding where float32 products underflow)
        # and marginalised per chain for the whole chunk at once, outside the scan.
        state_axes = tuple(range(1, n_chains + 1))
        totals = jnp.sum(gammas, axis=state_axes, keepdims=True)
        gammas = gammas / jnp.where((totals > 0) & jnp.isfinite(totals), totals, 1.0)
        marg = tuple(chain_marginals(gammas, n_chains, first_axis=1))
        return (beta_start, counts), (marg, gammas if want_joint else None, log_norms.sum())

    beta_last = jnp.ones_like(prior)
    (_, counts), (marg, joint, log_norms) = lax.scan(
        backward_chunk, (beta_last, zero_counts), (xs_chunks, t_chunks, alpha_starts), reverse=True
    )
    flat = lambda a: a.reshape((n_chunks * chunk,) + a.shape[2:])
    marginals = tuple(flat(m) for m in marg)
    return Posteriors(
        log_marginal=log_norms.sum(),
        marginals=marginals,
        trans_counts=counts if want_counts else None,
        joint=flat(joint) if want_joint else None,
    )


@partial(jax.jit, static_argnames=("chunk_log_lik", "n_frames", "chunk", "want_counts", "want_joint"))
def _posteriors_jit(log_init, log_trans, data, params, length, chunk_log_lik, n_frames, chunk, want_counts, want_joint):
    n_chunks = -(-n_frames // chunk)
    pad = n_chunks * chunk - n_frames

    def to_chunks(a):
        a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape((n_chunks, chunk) + a.shape[1:])

    xs_chunks = jax.tree_util.tree_map(to_chunks, data)
    length = n_frames if length is None else jnp.minimum(length, n_frames)
    post = _smooth(
        log_init, log_trans, lambda x: chunk_log_lik(x, params), xs_chunks, length, n_chunks, chunk, want_counts,
        want_joint,
    )
    cut = lambda a: a[:n_frames]
    return post._replace(
        marginals=tuple(cut(m) for m in post.marginals),
        joint=None if post.joint is None else cut(post.joint),
    )


def _identity(x):
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
        length: optional int scalar; frames ``t >= length`` are padding.
        trans_counts: also return per-chain expected transition counts (EM needs them).
        joint: also return the joint posterior ``(T, N_1, ..., N_K)``.
        chunk_size: frames per checkpointed chunk; by default chosen from
            ``DEFAULT_MESSAGE_BYTES`` (one chunk when everything fits).

    Returns:
        ``Posteriors`` with per-chain marginals K x ``(T, N_k)``.
    """
    shape = tuple(jnp.shape(log_lik))
    _validate(log_init, log_trans, shape, length, chunk_size)
    n_joint = math.prod(shape[1:])
    chunk = chunk_size or choose_chunk_size(shape[0], n_joint)
    return _posteriors_jit(
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
    n_states = tuple(int(jnp.shape(v)[0]) for v in log_init)
    n_frames = int(jnp.shape(observations)[0])
    _validate(log_init, log_trans, (n_frames,) + n_states, length, chunk_size)
    chunk = chunk_size or choose_chunk_size(n_frames, math.prod(n_states))
    return _posteriors_jit(
        tuple(log_init), tuple(log_trans), observations, params, length, chunk_log_lik, n_frames,
        min(chunk, n_frames),
        trans_counts, joint,
    )


# --------------------------------------------------------------------------- Viterbi


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
    pad = n_chunks * chunk - n_frames
    log_lik = jnp.pad(log_lik, [(0, pad)] + [(0, 0)] * len(state_shape))
    ll_chunks = log_lik.reshape((n_chunks, chunk) + state_shape)
    t_chunks = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)
    length = n_frames if length is None else jnp.minimum(length, n_frames)
    log_prior = joint_log_initial(log_init)

    def step(delta, frame):
        ll_t, t = frame
        new = jnp.where(t == 0, log_prior, _max_propagate(delta, log_trans)) + ll_t
        delta = jnp.where(t < length, new, delta)
        return delta, delta

    def fwd_only(delta, xs):
        end, _ = lax.scan(step, delta, xs)
        return end, None

    starts = _chunk_boundaries(fwd_only, log_prior, (ll_chunks, t_chunks), n_chunks)

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
        return state_first, path

    init_state = jnp.zeros(len(state_shape), dtype=jnp.int32)
    _, paths = lax.scan(backtrack_chunk, init_state, (ll_chunks, t_chunks, starts), reverse=True)
    return paths.reshape(n_chunks * chunk, len(state_shape))[:n_frames]


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
        ``(T, K)`` int32 path, column k the state of chain k.
    """
    shape = tuple(jnp.shape(log_lik))
    _validate(log_init, log_trans, shape, length, chunk_size)
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
