"""The kernels every exact pass is built from: scaled likelihoods, one filter step, both filters.

Numerics (Rabiner's scaling, no logsumexp inside a scan): each frame's
likelihoods are exponentiated relative to that frame's best state, which gets
``exp(LIK_HEADROOM)`` rather than 1, and every message is renormalised to sum
to one at every frame, so that

    log p(y_{1:T}) = sum_t (log c_t + shift_t)

stays finite for any T. The headroom keeps states far below a frame's best one
representable in float32 (down to about ``87 + LIK_HEADROOM`` nats below it):
sticky chains on STFT frames often jump to a state the prediction held very
unlikely, and flushing such states to zero would lose mass that later frames
amplify. A frame's total stays below ``exp(LIK_HEADROOM)`` because the
prediction sums to one, far below float32's largest number.

Bad data follow the package's one policy (see ``fhmm_ppl.hmm``): a frame with
a NaN log-likelihood gets a NaN shift and NaN likelihoods, so every message
from it on is NaN and ``log_normaliser`` gives NaN; ``normalise`` leaves a zero
message zero (impossible data), and ``log_normaliser`` reads the first zero
frame total as ``-inf``. NaN wins over ``-inf``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
from jax import Array, lax

from fhmm_ppl.hmm._factored import joint_initial, propagate_forward

#: The best state of each frame gets likelihood exp(LIK_HEADROOM) in the scaled recursions
#: (float32 reaches exp(88.7); a frame's total never exceeds its best state's likelihood).
LIK_HEADROOM = 80.0


class Transitions(NamedTuple):
    """The chains' probabilities, exponentiated once per call (a pytree).

    Attributes:
        prior: ``(N_1, ..., N_K)`` joint initial probabilities.
        trans: K arrays ``(N_k, N_k)`` (rows: from, columns: to).
        first_trans_t: ``trans[0].T``, made once outside the scans so that chain 0's
            product inside them is one plain matrix product.
    """

    prior: Array
    trans: tuple[Array, ...]
    first_trans_t: Array


def transitions(log_init: Sequence[Array], log_trans: Sequence[Array]) -> Transitions:
    """``Transitions`` from K log initial ``(N_k,)`` and K log transition ``(N_k, N_k)`` arrays."""
    trans = tuple(jnp.exp(m) for m in log_trans)
    return Transitions(joint_initial([jnp.exp(v) for v in log_init]), trans, trans[0].T)


def scaled_likelihoods(log_lik: Array, headroom: float = LIK_HEADROOM) -> tuple[Array, Array]:
    """Per-frame likelihoods ``exp(log_lik - shift)``, flat ``(T, prod(N))``, and shifts ``(T,)``.

    ``shift = max - headroom`` (the best state of each frame at ``exp(headroom)``); 0 for a
    frame whose states are all ``-inf`` (impossible: its likelihoods are all zero); NaN, with
    NaN likelihoods, for a frame holding a NaN.
    Computed for all frames at once, outside the scans, whose bodies reshape each flat
    frame for free; XLA-CPU writes the flat layout faster than the ``(T, N_1, ..., N_K)`` one.

    Args:
        log_lik: ``(T, N_1, ..., N_K)`` (or already flat ``(T, prod(N))``).
        headroom: log of the likelihood given to each frame's best state.
    """
    flat = log_lik.reshape(log_lik.shape[0], -1)
    top = jnp.max(flat, axis=1, keepdims=True)
    top = jnp.where(top == -jnp.inf, headroom, top)
    # (log_lik - top) first: the best state gets exactly exp(headroom), whatever float32
    # does to ``top - headroom`` when |top| is large.
    return jnp.exp(flat - top + headroom), (top - headroom).reshape(-1)


def mask_padding(log_lik: Array, length) -> Array:
    """Log-likelihood 0 (no observation) at frames ``t >= length``, whatever they held; ``length`` may be None."""
    if length is None:
        return log_lik
    valid = (jnp.arange(log_lik.shape[0]) < length).reshape((-1,) + (1,) * (log_lik.ndim - 1))
    return jnp.where(valid, log_lik, 0.0)


def normalise(message: Array, keep_zero: bool = True) -> tuple[Array, Array]:
    """``(message / total, total)``; a zero message stays zero, one NaN makes the whole message NaN.

    ``keep_zero=False`` divides without the guard, the fastest step for small state spaces (a
    scalar select inside a scan body costs XLA-CPU a separate kernel): a zero message then
    becomes 0/0 = NaN and so do all later ones, which only a pass that keeps nothing but the
    totals may accept (``log_normaliser`` still reads the first zero total as ``-inf``).
    """
    total = message.sum()
    return message / (jnp.where(total == 0, 1.0, total) if keep_zero else total), total


def predict(alpha: Array, dyn: Transitions) -> Array:
    """``p(s_t | y_{1:t-1})`` from the filtered ``alpha`` at ``t - 1``: every chain through its own matrix."""
    return propagate_forward(alpha, dyn.trans, first_trans_t=dyn.first_trans_t)


def update(pred: Array, lik_t: Array, keep_zero: bool = True) -> tuple[Array, Array]:
    """The filter step's second half: weigh the prediction by the frame's (flat) likelihoods and
    normalise (``keep_zero`` as ``normalise``). Returns ``(alpha_t, c_t)``."""
    return normalise(pred * lik_t.reshape(pred.shape), keep_zero)


def log_normaliser(totals: Array, shifts: Array) -> Array:
    """``log p(y) = sum_t (log c_t + shift_t)``: ``-inf`` if a total is zero, NaN if a shift is NaN.

    Summed frame by frame: ``log c_t`` is near ``LIK_HEADROOM`` and ``shift_t`` near its negative,
    so two separate sums over T frames would cancel and lose float32's digits.
    """
    value = jnp.sum(jnp.log(totals) + shifts)
    value = jnp.where(jnp.any(totals == 0), -jnp.inf, value)
    return jnp.where(jnp.any(jnp.isnan(shifts)), jnp.nan, value)


def forward_filter(dyn: Transitions, lik: Array, keep: bool = True, unroll: int = 1, keep_zero: bool = True):
    """Normalised filtered messages ``alpha_t = p(s_t | y_{1:t})`` over flat frames ``lik (T, P)``.

    Returns:
        ``(last, kept, totals)``: the last message ``(N_1, ..., N_K)``; if ``keep``, the
        first message ``(1, P)`` and the others ``(T - 1, P)`` as a pair (kept apart so that a
        consumer's fused kernel joins them instead of a copy of ``T x P`` floats), else None;
        the frame totals ``c_t`` ``(T,)``. ``unroll``: frames per scan iteration (speed only);
        ``keep_zero``: as ``normalise``.
    """
    first, first_total = update(dyn.prior, lik[0], keep_zero)

    def step(alpha, lik_t):
        alpha, total = update(predict(alpha, dyn), lik_t, keep_zero)
        return alpha, ((alpha.reshape(-1) if keep else None), total)

    last, (alphas, totals) = lax.scan(step, first, lik[1:], unroll=unroll)
    totals = jnp.concatenate([first_total[None], totals])
    return last, ((first.reshape(1, -1), alphas) if keep else None), totals


def backward_filter(log_trans: Sequence[Array], shape: tuple[int, ...], lik: Array, last: Array, keep: bool = True):
    """Normalised backward messages ``beta_{t-1} ∝ A (lik_t * beta_t) ∝ p(y_{t:T} | s_{t-1})``.

    Runs over flat frames ``lik (T', P)`` from ``beta = last`` after the last of them; needs
    nothing from the forward filter, so the two can run at the same time.

    Returns:
        ``(first, betas, totals)``: the message before frame 0 ``(N_1, ..., N_K)``, all of
        them ``(T', P)`` if ``keep`` (message ``t`` is the one before frame ``t``), and their
        totals ``(T',)``.
    """
    trans = [jnp.exp(m) for m in log_trans]
    back_trans = [m.T for m in trans]  # transposed once, outside the scan

    def step(beta, lik_t):
        beta, total = normalise(propagate_forward(lik_t.reshape(shape) * beta, back_trans, first_trans_t=trans[0]))
        return beta, ((beta.reshape(-1) if keep else None), total)

    first, (betas, totals) = lax.scan(step, last, lik, reverse=True)
    return first, betas, totals
