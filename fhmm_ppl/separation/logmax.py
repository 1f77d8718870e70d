"""Log-max (MIXMAX) separation masks: the posterior probability that each source dominates a bin.

With log-magnitude spectra ``y_f ~= max_k x_{k,f}``, the mask of source k at
``(t, f)`` is ``sum_s p(s_t = s | y) P(source k is the max at f | s, y_tf)``.
Both the joint log-likelihoods and the dominance terms are ``(T, prod(N), F)``
tensors, so everything is computed in chunks of frames.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fhmm_ppl import hmm
from fhmm_ppl.hmm.emissions import logmax_dominance, logmax_log_lik, logmax_terms

#: Frames per chunk for the (T, prod(N), F) dominance tensors.
MASK_CHUNK = 16
#: Memory budget of one chunk of per-bin log-max terms when making log-likelihoods.
LOG_LIK_BYTES = 512 * 2**20


@jax.jit
def masks_from_joint(joint, log_mag, means, variances):
    """Dominance masks ``(K, T, F)`` from a posterior over joint states ``joint (T, prod N)``.

    Args:
        log_mag: ``(T, F)`` log-magnitudes; means, variances: K arrays ``(N_k, F)``.
    """
    n_frames, n_bins = log_mag.shape
    pad = (-n_frames) % MASK_CHUNK
    joint = jnp.pad(joint, ((0, pad), (0, 0))).reshape(-1, MASK_CHUNK, joint.shape[1])
    frames = jnp.pad(log_mag, ((0, pad), (0, 0))).reshape(-1, MASK_CHUNK, n_bins)

    def one(args):
        post, chunk = args
        log_pdf, log_cdf = logmax_terms(chunk, means, variances)
        if len(means) == 2:  # source 1 dominates with probability sigmoid(a_1 - a_2); source 2 takes the rest
            # Laid out (C, F, N1, N2) so the fused reduction runs over the minor axes: XLA-CPU summed
            # the (C, N1, N2, F) layout over (N1, N2) about 3x more slowly. Nothing that size is stored.
            a = [jnp.swapaxes(p - c, 1, 2) for p, c in zip(log_pdf, log_cdf)]  # (C, F, N_k)
            # sigmoid(x) = (1 + tanh(x / 2)) / 2, the weights' half-sum taken out of the reduction
            # (another 15 % faster than jax.nn.sigmoid here).
            half = 0.5 * (a[0][:, :, :, None] - a[1][:, :, None, :])
            weights = post.reshape(post.shape[0], 1, means[0].shape[0], -1)
            total = jnp.sum(post, axis=1, keepdims=True)
            mask = 0.5 * (total + jnp.sum(weights * jnp.tanh(half), axis=(2, 3)))
            return jnp.stack([mask, total - mask])
        dom = logmax_dominance(log_pdf, log_cdf)  # (K, C, N_1, ..., N_K, F)
        dom = dom.reshape(dom.shape[0], MASK_CHUNK, -1, n_bins)
        return jnp.einsum("cp,kcpf->kcf", post, dom)

    masks = jax.lax.map(one, (joint, frames))  # (n_chunks, K, C, F)
    return jnp.moveaxis(masks, 1, 0).reshape(len(means), -1, n_bins)[:, :n_frames]


def logmax_masks(log_init, log_trans, means, variances, log_mag):
    """Dominance masks ``(K, T, F)`` for log-magnitudes ``log_mag (T, F)``.

    Args:
        log_init: K ``(N_k,)``; log_trans: K ``(N_k, N_k)``; means, variances: K ``(N_k, F)``.

    Returns:
        masks summing to one over sources at every bin.
    """
    joint = logmax_joint_posterior(log_init, log_trans, means, variances, log_mag)
    return masks_from_joint(joint, log_mag, tuple(means), tuple(variances))


def logmax_joint_posterior(log_init, log_trans, means, variances, log_mag, scale: float = 1.0):
    """Exact posterior over joint states ``(T, prod N)`` of the log-max model on ``log_mag (T, F)``,
    with the frame log-likelihoods multiplied by ``scale`` (see ``SeparatorOptions.likelihood_scale``)."""
    log_lik = logmax_log_lik_chunked(log_mag, means, variances) * scale
    return hmm.joint_posterior(log_init, log_trans, log_lik, flat=True)[0]


_log_lik_chunk = jax.jit(logmax_log_lik)


def logmax_log_lik_chunked(log_mag, means, variances):
    """``(T, N_1, ..., N_K)`` log-max log-likelihoods of ``log_mag (T, F)``, made chunk by chunk of frames so that the
    per-bin ``(frames, prod N, F)`` terms stay within ``LOG_LIK_BYTES``. The loop is in Python:
    XLA-CPU ran the same fused reduction several times slower inside a ``lax.map``."""
    means, variances = tuple(means), tuple(variances)
    n_frames, n_bins = log_mag.shape
    n_joint = math.prod(int(m.shape[0]) for m in means)
    largest = max(16, LOG_LIK_BYTES // (4 * n_joint * n_bins * (len(means) + 1)))
    chunk = -(-n_frames // -(-n_frames // largest))  # equal chunks, as few as fit the budget
    pad = (-n_frames) % chunk
    frames = jnp.pad(log_mag, ((0, pad), (0, 0)))
    parts = [_log_lik_chunk(frames[i: i + chunk], means, variances) for i in range(0, n_frames + pad, chunk)]
    return jnp.concatenate(parts)[:n_frames]
