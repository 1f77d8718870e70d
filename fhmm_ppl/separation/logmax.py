"""Log-max (MIXMAX) separation masks: the posterior probability that each source dominates a bin.

With log-magnitude spectra ``y_f ~= max_k x_{k,f}``, the mask of source k at
``(t, f)`` is ``sum_s p(s_t = s | y) P(source k is the max at f | s, y_tf)``.
Both the joint log-likelihoods and the dominance terms are ``(T, prod(N), F)``
tensors, so everything is computed in chunks of frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fhmm_ppl import hmm
from fhmm_ppl.hmm.emissions import logmax_dominance, logmax_log_lik, logmax_terms

#: Frames per chunk for the (T, prod(N), F) dominance tensors.
MASK_CHUNK = 16


def _chunk_log_lik(frames, params):
    means, variances = params
    return logmax_log_lik(frames, means, variances)


@jax.jit
def _masks(joint, log_mag, means, variances):
    n_frames, n_bins = log_mag.shape
    pad = (-n_frames) % MASK_CHUNK
    joint = jnp.pad(joint, ((0, pad), (0, 0))).reshape(-1, MASK_CHUNK, joint.shape[1])
    frames = jnp.pad(log_mag, ((0, pad), (0, 0))).reshape(-1, MASK_CHUNK, n_bins)

    def one(args):
        post, chunk = args
        log_pdf, log_cdf = logmax_terms(chunk, means, variances)
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
    post = hmm.posteriors_chunked(log_init, log_trans, _chunk_log_lik, log_mag, (tuple(means), tuple(variances)),
                                  joint=True, chunk_size=MASK_CHUNK * 4)
    joint = post.joint.reshape(log_mag.shape[0], -1)
    return _masks(joint, log_mag, tuple(means), tuple(variances))
