"""Emission models: frame log-likelihoods of every joint state, ``(T, N_1, ..., N_K)``.

Each chain ``k`` in state ``s_k`` contributes a source with its own parameters;
the emission model says how the sources combine into the observation:

* ``gaussian_log_lik``: additive Gaussian sources on feature vectors (MFCC,
  log-mel); the joint state has mean ``sum_k mu_k[s_k]`` and covariance
  ``sum_k C_k[s_k]``. For K = 1 this is hmmlearn's ``GaussianHMM`` with the
  same four covariance types (``spherical``, ``diag``, ``full``, ``tied``) and
  the same parameter shapes.
* ``complex_gaussian_log_lik``: STFT frames ``y_tf ~ CN(0, sum_k v_k[s_k, f])``
  (Itakura-Saito / Wiener model). One matrix product of ``|y|^2`` with
  ``1 / V_joint`` gives every joint state's log-likelihood.
* ``logmax_log_lik``: log-magnitude spectra ``y_f ~= max_k x_{k,f}`` with
  ``x_{k,f} | s_k ~ N(mu, sigma^2)`` (Roweis 2003; Nadas' MIXMAX); exact per-bin
  likelihood ``sum_k p_k(y_f) prod_{j != k} Phi_j(y_f)`` (for two chains floored
  ``LOGMAX_FLOOR`` nats below the bin's best term, ``logmax_pair_terms``).

All functions are pure and jit-compatible; parameters are tuples of K arrays.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import log_ndtr

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")
LOG_2PI = math.log(2 * math.pi)
#: Two chains' log-max likelihood per bin is exact down to this many nats below the bin's best
#: term of either chain, and floored there (``logmax_pair_terms``; at most PAIR_HEADROOM + 87:
#: float32's smallest normal number is about exp(-87)).
LOGMAX_FLOOR = 160.0
#: ``logmax_pair_terms`` exponentiates a bin's best term to exp(PAIR_HEADROOM), a pair of them to
#: twice that (float32 reaches exp(88.7)).
PAIR_HEADROOM = 80.0


def joint_sum(per_chain: Sequence[Array], event_first: bool = False) -> Array:
    """Sum per-chain parameters over joint states.

    Args:
        per_chain: K arrays ``(N_k, *event)``, or with ``event_first`` K arrays ``(E, N_k)``
            (one event axis).

    Returns:
        ``(N_1, ..., N_K, *event)`` with entry ``s`` equal to ``sum_k per_chain[k][s_k]``;
        with ``event_first``, ``(E, N_1, ..., N_K)``.
    """
    n_chains = len(per_chain)
    total = 0.0
    for k, arr in enumerate(per_chain):
        if event_first:
            shape = (arr.shape[0],) + (1,) * k + (arr.shape[1],) + (1,) * (n_chains - k - 1)
        else:
            shape = (1,) * k + (arr.shape[0],) + (1,) * (n_chains - k - 1) + arr.shape[1:]
        total = total + arr.reshape(shape)
    return total


def _expand_covariance(covars: Array, covariance_type: str, n_states: int, dim: int) -> Array:
    """Any covariance type as diagonal ``(N, D)`` (spherical/diag) or full ``(N, D, D)``."""
    if covariance_type == "spherical":
        return jnp.broadcast_to(covars[:, None], (n_states, dim))
    if covariance_type == "diag":
        return covars
    if covariance_type == "tied":
        return jnp.broadcast_to(covars, (n_states, dim, dim))
    return covars


def gaussian_log_lik(
    observations: Array,
    means: Sequence[Array],
    covars: Sequence[Array],
    covariance_type: str = "diag",
) -> Array:
    """Log-likelihoods of additive Gaussian sources.

    Args:
        observations: ``(T, D)`` feature frames.
        means: K arrays ``(N_k, D)``.
        covars: K arrays, hmmlearn shapes: ``spherical (N_k,)``, ``diag (N_k, D)``,
            ``full (N_k, D, D)``, ``tied (D, D)``.
        covariance_type: one of ``COVARIANCE_TYPES``, the same for every chain.

    Returns:
        ``(T, N_1, ..., N_K)``.
    """
    n_frames, dim = observations.shape
    n_states = tuple(m.shape[0] for m in means)
    mean = joint_sum(means).reshape(-1, dim)
    if covariance_type in ("spherical", "diag"):
        var = joint_sum([_expand_covariance(c, covariance_type, n, dim) for c, n in zip(covars, n_states)])
        var = var.reshape(-1, dim)
        quad = _diagonal_quadratic(observations, mean, var)
        log_det = jnp.sum(jnp.log(var), axis=1)
    else:
        if covariance_type == "tied":
            cov = sum(covars)[None]
        else:
            cov = joint_sum(covars).reshape(-1, dim, dim)
        chol = jnp.linalg.cholesky(cov)
        diff = observations[None, :, :] - mean[:, None, :]  # (P, T, D)
        chol_b = jnp.broadcast_to(chol, (mean.shape[0], dim, dim))
        solved = jax.scipy.linalg.solve_triangular(chol_b, jnp.swapaxes(diff, 1, 2), lower=True)
        quad = jnp.sum(solved**2, axis=1).T  # (T, P)
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_b, axis1=1, axis2=2)), axis=1)
    log_lik = -0.5 * (dim * LOG_2PI + log_det + quad)
    return log_lik.reshape((n_frames,) + n_states)


#: Elements of (frames x joint states x dims) computed at once by ``_diagonal_quadratic``.
QUAD_BLOCK_ELEMENTS = 1 << 22


def _diagonal_quadratic(observations: Array, mean: Array, var: Array) -> Array:
    """``sum_d (y_td - m_pd)^2 / v_pd`` ``(T, P)``, from the differences themselves.

    Expanding the square into matrix products is faster but cancels
    catastrophically in float32 when variances are small next to the values
    (log-spectra with floored bins): errors of hundreds of nats per sequence,
    enough to make EM's objective appear to fall. Frames are processed in
    blocks so memory stays at ``QUAD_BLOCK_ELEMENTS`` floats; within a block the
    sum runs over dimensions into a ``(frames, P)`` accumulator, which XLA-CPU
    runs much faster than a reduction of a ``(frames, P, D)`` tensor over its
    minor axis.
    """
    n_frames, dim = observations.shape
    n_joint = mean.shape[0]
    block = max(1, min(n_frames, QUAD_BLOCK_ELEMENTS // max(1, n_joint)))
    pad = (-n_frames) % block
    blocks = jnp.pad(observations, ((0, pad), (0, 0))).reshape(-1, block, dim)
    precision = 1.0 / var

    def one(frames):
        def add_dimension(total, column):
            values, means, precisions = column  # (block,), (P,), (P,)
            diff = values[:, None] - means[None]
            return total + diff * diff * precisions[None], None

        zero = jnp.zeros((frames.shape[0], n_joint), jnp.result_type(frames, mean, precision))
        return jax.lax.scan(add_dimension, zero, (frames.T, mean.T, precision.T))[0]

    return jax.lax.map(one, blocks).reshape(-1, n_joint)[:n_frames]


def complex_gaussian_log_lik(power: Array, psd: Sequence[Array]) -> Array:
    """Log-likelihoods of the complex-Gaussian (Itakura-Saito) model of STFT frames.

    ``log p(y_t | s) = -sum_f [log(pi V_f(s)) + |y_tf|^2 / V_f(s)]`` with
    ``V_f(s) = sum_k psd[k][s_k, f]``.

    Args:
        power: ``(T, F)`` squared magnitudes ``|y_tf|^2``.
        psd: K arrays ``(N_k, F)`` of positive power spectral densities.

    Returns:
        ``(T, N_1, ..., N_K)``.
    """
    n_states = tuple(v.shape[0] for v in psd)
    return complex_gaussian_log_lik_from_terms(power, complex_gaussian_terms(psd)).reshape((power.shape[0],) + n_states)


def complex_gaussian_terms(psd: Sequence[Array], scale=1.0) -> tuple[Array, Array]:
    """The parts of ``complex_gaussian_log_lik`` that do not depend on the frames, times ``scale``:
    ``-scale / V`` ``(F, prod N)`` and ``-scale * sum_f log(pi V_f)`` ``(prod N,)`` (joint states
    flattened). A separator computes them once per set of models, not once per mixture.

    Args:
        psd: K arrays ``(N_k, F)``; scale: a float (the evidence scale).
    """
    # Built as (F, P), not transposed from (P, F): XLA-CPU runs ``power @ inv.T`` well below the
    # speed of the same product with an untransposed right operand.
    var = joint_sum([v.T for v in psd], event_first=True).reshape(psd[0].shape[1], -1)
    return -scale / var, -scale * jnp.sum(jnp.log(jnp.pi * var), axis=0)


def complex_gaussian_log_lik_from_terms(power: Array, terms: tuple[Array, Array]) -> Array:
    """``power`` ``(T, F)`` and ``complex_gaussian_terms`` -> log-likelihoods ``(T, prod N)`` (times the terms' scale)."""
    weights, offsets = terms
    return power @ weights + offsets


def complex_gaussian_expected_log_lik(data, marginals: Sequence[Array], k: int) -> Array:
    """A lower bound on ``E_{q_-k}[log p(y_t | s) | s_{t,k} = i]`` for the complex-Gaussian model,
    linear in the number of chains (for ``structured_mean_field(expected_log_lik=...)``).

    The exact expectation of ``log V`` and ``1 / V`` with ``V = sum_j V_j`` needs every joint
    state. Two standard bounds make it separable across chains (as in IS-NMF's MM updates):
    ``-log V >= -log phi + 1 - V / phi`` (tangent of the concave log at ``phi``) and
    ``1 / V <= sum_j lambda_j^2 / V_j`` (Jensen, ``lambda`` on the simplex). Both are tight at
    ``phi = E_q[V]`` and ``lambda_j ∝ 1 / E_q[1 / V_j]`` for a point-mass ``q``, and those are
    the choices made here from the current marginals, so each mean-field update raises a bound
    on the ELBO, which stays below ``log p(y)``.

    Args:
        data: ``(power (T, F), psd)`` with ``psd`` K arrays ``(N_j, F)``.
        marginals: K arrays ``(T, N_j)``; k: the chain to update.

    Returns:
        ``(T, N_k)``.
    """
    power, psd = data
    mean_v = [m @ v for m, v in zip(marginals, psd)]  # E_q[V_j]: (T, F)
    mean_inv = [m @ (1.0 / v) for m, v in zip(marginals, psd)]  # E_q[1 / V_j]: (T, F)
    phi = sum(mean_v)
    weights = [1.0 / a for a in mean_inv]
    lam = [w / sum(weights) for w in weights]
    others_inv = sum(l**2 * a for j, (l, a) in enumerate(zip(lam, mean_inv)) if j != k)
    const = -jnp.log(jnp.pi * phi) + 1.0 - (phi - mean_v[k]) / phi - power * others_inv
    own = -(1.0 / phi) @ psd[k].T - (power * lam[k] ** 2) @ (1.0 / psd[k]).T
    return own + const.sum(axis=1, keepdims=True)


def logmax_log_lik(log_spec: Array, means: Sequence[Array], variances: Sequence[Array]) -> Array:
    """Log-likelihoods of the log-max (MIXMAX) model.

    Args:
        log_spec: ``(T, F)`` log-magnitude spectra.
        means: K arrays ``(N_k, F)``; variances: K arrays ``(N_k, F)``.

    Returns:
        ``(T, N_1, ..., N_K)``. Memory ``O(T * prod(N) * F)``: call per chunk of
        frames (``hmm.posteriors_chunked``) for large problems.
    """
    if len(means) == 2:
        return logmax_pair(*logmax_pair_terms(log_spec, means, variances))
    return logmax_combine(*logmax_terms(log_spec, means, variances)).sum(axis=-1)


def logmax_pair_terms(log_spec: Array, means: Sequence[Array], variances: Sequence[Array]):
    """The per-chain terms of two chains' log-max log-likelihoods, which ``logmax_pair`` combines.

    ``log(p_1 Phi_2 + p_2 Phi_1) = log Phi_1 + log Phi_2 + log(e^{a_1} + e^{a_2})`` per bin, with
    ``a_k = log p_k - log Phi_k``. Each chain's ``a_k`` is exponentiated here, once per state,
    relative to the bin's best term of either chain ``m_f`` (plus ``PAIR_HEADROOM``, which keeps
    both sides of a sum within float32's range), so that every joint state needs one logarithm per
    bin instead of an exponential and a logarithm (``softplus``): ``logmax_pair`` runs twice as fast.

    A term more than ``LOGMAX_FLOOR`` nats below ``m_f`` is raised to that floor first, where its
    exponential would otherwise flush to zero: a joint state whose *both* chains lie that far below
    the bin's best explanation gets ``m_f - LOGMAX_FLOOR + log 2`` for the bin instead of less
    (a floor far below any state that matters; every other joint state's term is exact to float32).

    Returns:
        ``(e_1 (T, N_1, F), e_2 (T, N_2, F), c_1 (T, N_1), c_2 (T, N_2))``: the scaled exponentials
        and the per-chain sums ``sum_f log Phi_1 + sum_f (m_f - PAIR_HEADROOM)`` and ``sum_f log Phi_2``.
    """
    log_pdf, log_cdf = logmax_terms(log_spec, means, variances)
    a1, a2 = log_pdf[0] - log_cdf[0], log_pdf[1] - log_cdf[1]
    best = jnp.maximum(a1.max(axis=1), a2.max(axis=1))  # m_f: (T, F)

    def scaled(a):
        return jnp.exp(jnp.maximum(a - best[:, None, :], -LOGMAX_FLOOR) + PAIR_HEADROOM)

    shifts = jnp.sum(best - PAIR_HEADROOM, axis=-1)[:, None]
    return scaled(a1), scaled(a2), log_cdf[0].sum(-1) + shifts, log_cdf[1].sum(-1)


def logmax_pair(e1: Array, e2: Array, c1: Array, c2: Array) -> Array:
    """Two chains' log-max log-likelihoods ``(T, N_1, N_2)`` from ``logmax_pair_terms``, in one
    fused reduction over bins. Compile it apart from the terms: in one program XLA-CPU fuses the
    two into one kernel that runs far slower (docs/benchmarks.md, kernel choices)."""
    joint = jnp.sum(jnp.log(e1[:, :, None, :] + e2[:, None, :, :]), axis=-1)
    return c1[:, :, None] + c2[:, None, :] + joint


def logmax_terms(log_spec: Array, means: Sequence[Array], variances: Sequence[Array]):
    """Per-chain Gaussian log-density and log-CDF at each bin.

    Returns:
        two lists of K arrays ``(T, N_k, F)``.
    """
    log_pdf, log_cdf = [], []
    for mu, var in zip(means, variances):
        z = (log_spec[:, None, :] - mu[None]) / jnp.sqrt(var)[None]
        log_pdf.append(-0.5 * (LOG_2PI + jnp.log(var)[None] + z**2))
        log_cdf.append(log_ndtr(z))
    return log_pdf, log_cdf


def logmax_combine(log_pdf: Sequence[Array], log_cdf: Sequence[Array]) -> Array:
    """Per-bin log-max likelihood of every joint state, ``(T, N_1, ..., N_K, F)``.

    ``log sum_k exp(log p_k + sum_{j != k} log Phi_j)``, written as the sum of
    all log-CDFs plus ``logsumexp_k(log p_k - log Phi_k)`` (stable: both terms
    are finite wherever the likelihood is positive).
    """
    n_chains = len(log_pdf)
    moved = lambda a, k: _place_chain(a, k, n_chains)
    all_cdf = sum(moved(c, k) for k, c in enumerate(log_cdf))
    dominance = [moved(p - c, k) for k, (p, c) in enumerate(zip(log_pdf, log_cdf))]
    if n_chains == 1:
        return log_pdf[0]
    stacked = jnp.stack(jnp.broadcast_arrays(*dominance), axis=0)
    return all_cdf + jax.scipy.special.logsumexp(stacked, axis=0)


def logmax_dominance(log_pdf: Sequence[Array], log_cdf: Sequence[Array]) -> Array:
    """Probability that source k dominates bin f given each joint state.

    Returns:
        ``(K, T, N_1, ..., N_K, F)``; sums to one over the first axis.
    """
    n_chains = len(log_pdf)
    dominance = [_place_chain(p - c, k, n_chains) for k, (p, c) in enumerate(zip(log_pdf, log_cdf))]
    if n_chains == 2:  # a two-way softmax is a sigmoid
        first = jax.nn.sigmoid(dominance[0] - dominance[1])
        return jnp.stack([first, 1.0 - first])
    stacked = jnp.stack(jnp.broadcast_arrays(*dominance), axis=0)
    return jax.nn.softmax(stacked, axis=0)


def _place_chain(arr: Array, k: int, n_chains: int) -> Array:
    """``(T, N_k, F)`` -> ``(T, 1, .., N_k, .., 1, F)`` with N_k at chain axis k."""
    shape = (arr.shape[0],) + (1,) * k + (arr.shape[1],) + (1,) * (n_chains - k - 1) + (arr.shape[2],)
    return arr.reshape(shape)
