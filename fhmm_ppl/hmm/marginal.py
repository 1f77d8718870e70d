"""``log_marginal``: the forward filter's normaliser, with the posterior as its gradient."""

from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax import Array

from fhmm_ppl.hmm._validate import validate
from fhmm_ppl.hmm.filtering import forward_filter, log_normaliser, mask_padding, scaled_likelihoods, transitions
from fhmm_ppl.hmm.smoothing import posteriors


def _log_marginal(log_init, log_trans, log_lik, length, unroll):
    lik, shift = scaled_likelihoods(mask_padding(log_lik, length))
    # Only the totals are kept, so the step may divide without a guard (see ``normalise``).
    _, _, totals = forward_filter(transitions(log_init, log_trans), lik, keep=False, unroll=unroll, keep_zero=False)
    return log_normaliser(totals, shift)


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
# Jitted as a whole: called eagerly, a custom_vjp function would be traced again on every call.
one_thread_log_marginal = jax.jit(_log_marginal_with_posterior_gradient, static_argnums=(4,))


def log_marginal(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik: Array,
    length: Optional[Array] = None,
    *,
    unroll: int = 1,
) -> Array:
    """Log marginal likelihood ``log p(y_{1:T})`` of a factorial HMM, by one forward scan.

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
        ``()`` float: the log marginal; ``-inf`` for impossible data, NaN for NaN data.

    Cost ``O(T * prod(N) * sum(N))`` time, ``O(prod(N))`` extra memory. The same computation
    eagerly and under ``jit``, ``grad`` or ``vmap``; ``log_marginal_two_threads`` is the faster
    choice for one long concrete sequence on a multi-core CPU.

    Differentiable (reverse mode, ``jax.grad``) in the log probabilities, so it serves SVI and
    MCMC. The gradient is what the maths says it is, computed by the scaled smoother
    (``posteriors``): the joint posterior for ``log_lik``, expected transition counts for
    ``log_trans`` and first-frame marginals for ``log_init``. Differentiating through the
    scaled recursion instead would divide by squared frame totals, which underflow for peaky
    likelihoods (real STFT frames) and give NaN. Forward mode (``jax.jvp``) is not supported.
    """
    validate(log_init, log_trans, jnp.shape(log_lik), length)
    return one_thread_log_marginal(tuple(log_init), tuple(log_trans), log_lik, length, unroll)
