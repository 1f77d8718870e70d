"""Emission log-likelihoods against hmmlearn, scipy and direct formulas."""

import jax.numpy as jnp
import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM
from scipy.stats import multivariate_normal, norm

from fhmm_ppl.hmm import emissions


def _hmmlearn_model(rng, covariance_type, n_states=3, dim=4):
    model = GaussianHMM(n_components=n_states, covariance_type=covariance_type)
    model.n_features = dim
    model.startprob_ = np.full(n_states, 1 / n_states)
    model.transmat_ = np.full((n_states, n_states), 1 / n_states)
    model.means_ = rng.normal(size=(n_states, dim))
    a = rng.normal(size=(n_states, dim, dim))
    full = a @ a.transpose(0, 2, 1) + np.eye(dim)
    model.covars_ = {
        "spherical": rng.uniform(0.5, 2, n_states),
        "diag": rng.uniform(0.5, 2, (n_states, dim)),
        "full": full,
        "tied": full[0],
    }[covariance_type]
    return model


@pytest.mark.parametrize("covariance_type", emissions.COVARIANCE_TYPES)
def test_gaussian_matches_hmmlearn(rng, covariance_type):
    model = _hmmlearn_model(rng, covariance_type)
    x = rng.normal(size=(20, 4))
    expected = model._compute_log_likelihood(x)
    ours = emissions.gaussian_log_lik(
        jnp.asarray(x, jnp.float32), [jnp.asarray(model.means_, jnp.float32)],
        [jnp.asarray(model._covars_, jnp.float32)], covariance_type,
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-3)


def test_additive_gaussian_sources(rng):
    means = [rng.normal(size=(2, 3)), rng.normal(size=(3, 3))]
    covs = []
    for n in (2, 3):
        a = rng.normal(size=(n, 3, 3))
        covs.append(a @ a.transpose(0, 2, 1) + np.eye(3))
    x = rng.normal(size=(5, 3))
    ours = emissions.gaussian_log_lik(jnp.asarray(x), [jnp.asarray(m) for m in means], [jnp.asarray(c) for c in covs], "full")
    for i in range(2):
        for j in range(3):
            ref = multivariate_normal(means[0][i] + means[1][j], covs[0][i] + covs[1][j]).logpdf(x)
            np.testing.assert_allclose(ours[:, i, j], ref, rtol=1e-4)


def test_complex_gaussian_matches_the_density(rng):
    psd = [rng.uniform(0.1, 2, (2, 6)), rng.uniform(0.1, 2, (3, 6))]
    stft = rng.normal(size=(4, 6)) + 1j * rng.normal(size=(4, 6))
    ours = emissions.complex_gaussian_log_lik(jnp.asarray(np.abs(stft) ** 2), [jnp.asarray(v) for v in psd])
    for i in range(2):
        for j in range(3):
            var = psd[0][i] + psd[1][j]
            # A circular complex Gaussian CN(0, v) is two real Gaussians N(0, v / 2).
            ref = (norm(0, np.sqrt(var / 2)).logpdf(stft.real) + norm(0, np.sqrt(var / 2)).logpdf(stft.imag)).sum(1)
            np.testing.assert_allclose(ours[:, i, j], ref, rtol=1e-4)
            # the frame-independent terms, scaled once, give the scaled log-likelihoods
            terms = emissions.complex_gaussian_terms([jnp.asarray(v) for v in psd], 0.3)
            scaled = emissions.complex_gaussian_log_lik_from_terms(jnp.asarray(np.abs(stft) ** 2), terms)
            np.testing.assert_allclose(np.asarray(scaled).reshape(4, 2, 3)[:, i, j], 0.3 * ref, rtol=1e-4)


def test_logmax_density_is_the_derivative_of_the_max_cdf(rng):
    means = [rng.normal(size=(2, 3)), rng.normal(size=(2, 3))]
    variances = [rng.uniform(0.3, 1.5, (2, 3)), rng.uniform(0.3, 1.5, (2, 3))]
    y = rng.normal(size=(4, 3))
    ours = np.asarray(emissions.logmax_log_lik(jnp.asarray(y), [jnp.asarray(m) for m in means], [jnp.asarray(v) for v in variances]))
    h = 1e-5
    for i in range(2):
        for j in range(2):
            sd0, sd1 = np.sqrt(variances[0][i]), np.sqrt(variances[1][j])
            cdf = lambda v: norm.cdf(v, means[0][i], sd0) * norm.cdf(v, means[1][j], sd1)
            density = (cdf(y + h) - cdf(y - h)) / (2 * h)  # p(max <= y)' = p(max = y)
            np.testing.assert_allclose(ours[:, i, j], np.log(density).sum(1), rtol=1e-3)


def test_logmax_dominance_is_a_distribution(rng):
    means = [jnp.asarray(rng.normal(size=(2, 3))), jnp.asarray(rng.normal(size=(3, 3)))]
    variances = [jnp.ones((2, 3)), jnp.ones((3, 3))]
    log_pdf, log_cdf = emissions.logmax_terms(jnp.asarray(rng.normal(size=(4, 3))), means, variances)
    dom = emissions.logmax_dominance(log_pdf, log_cdf)
    assert dom.shape == (2, 4, 2, 3, 3)
    np.testing.assert_allclose(dom.sum(0), 1.0, atol=1e-6)
    y = np.asarray(rng.normal(size=(4, 3)))
    log_pdf, log_cdf = emissions.logmax_terms(jnp.asarray(y), means, variances)
    dom = np.asarray(emissions.logmax_dominance(log_pdf, log_cdf))
    m0, m1 = np.asarray(means[0]), np.asarray(means[1])
    for i in range(2):
        for j in range(3):  # P(source 1 is the max | y) = p_1 Phi_2 / (p_1 Phi_2 + p_2 Phi_1)
            one = norm.pdf(y, m0[i]) * norm.cdf(y, m1[j])
            two = norm.pdf(y, m1[j]) * norm.cdf(y, m0[i])
            np.testing.assert_allclose(dom[0, :, i, j], one / (one + two), rtol=1e-4, atol=1e-6)


def test_complex_gaussian_mean_field_bound_is_below_the_exact_expectation_and_tight_at_point_masses(rng):
    import jax

    from fhmm_ppl.hmm.variational import dense_expected_log_lik

    n_states, n_frames, n_bins = (3, 4, 2), 20, 6
    psd = tuple(jnp.asarray(rng.gamma(1.0, 1.0, size=(n, n_bins)) + 0.05, jnp.float32) for n in n_states)
    power = jnp.asarray(rng.gamma(1.0, 2.0, size=(n_frames, n_bins)), jnp.float32)
    dense = emissions.complex_gaussian_log_lik(power, psd)
    spread = tuple(jnp.asarray(rng.dirichlet(np.ones(n), size=n_frames), jnp.float32) for n in n_states)
    points = tuple(jax.nn.one_hot(rng.integers(0, n, size=n_frames), n) for n in n_states)
    for k in range(3):
        bound = emissions.complex_gaussian_expected_log_lik((power, psd), spread, k)
        exact = dense_expected_log_lik(dense, spread, k)
        assert bound.shape == (n_frames, n_states[k])
        assert np.all(np.asarray(bound) <= np.asarray(exact) + 1e-3)
        assert float(jnp.mean(exact - bound)) > 0.1  # a real bound, not the exact value by accident
        at = np.asarray(points[k]) > 0.5
        tight = emissions.complex_gaussian_expected_log_lik((power, psd), points, k)
        np.testing.assert_allclose(np.asarray(tight)[at], np.asarray(dense_expected_log_lik(dense, points, k))[at], rtol=1e-5)


def _logmax_pair_float64(y, means, variances, floor=None):
    """Two chains' log-max log-likelihoods ``(T, N_1, N_2)`` in float64 with scipy, per bin
    ``log Phi_1 + log Phi_2 + logaddexp(a_1, a_2)``; with ``floor``, each ``a_k`` first raised to
    ``floor`` nats below the bin's best ``a`` of either chain."""
    from scipy.special import log_ndtr

    y = np.asarray(y, np.float64)
    cdf, a = [], []
    for mu, var in zip(means, variances):
        mu, sd = np.asarray(mu, np.float64), np.sqrt(np.asarray(var, np.float64))
        z = (y[:, None, :] - mu[None]) / sd[None]
        cdf.append(log_ndtr(z))
        a.append(norm.logpdf(z) - np.log(sd)[None] - cdf[-1])
    if floor is not None:
        best = np.maximum(a[0].max(axis=1), a[1].max(axis=1))[:, None, :]
        a = [np.maximum(x, best - floor) for x in a]
    per_bin = cdf[0][:, :, None] + cdf[1][:, None, :] + np.logaddexp(a[0][:, :, None], a[1][:, None, :])
    return per_bin.sum(axis=-1)


def test_two_chain_logmax_is_exact_above_its_floor_and_floored_below(rng):
    """Two chains' log-max log-likelihoods (one logarithm per joint state and bin, from per-chain
    exponentials) against float64 scipy: exact where every bin of a joint state lies within
    ``LOGMAX_FLOOR`` nats of the bin's best term, the floored float64 value where it does not."""
    means = [rng.normal(0.0, 1.0, (5, 8)), rng.normal(0.0, 1.0, (6, 8))]
    variances = [rng.uniform(0.3, 1.5, (5, 8)), rng.uniform(0.3, 1.5, (6, 8))]
    y = rng.normal(0.0, 1.5, (40, 8))
    y[:5] += 60.0  # far above every state: terms thousands of nats apart, some pairs at the floor
    args = (jnp.asarray(y, jnp.float32), [jnp.asarray(m, jnp.float32) for m in means],
            [jnp.asarray(v, jnp.float32) for v in variances])
    ours = np.asarray(emissions.logmax_log_lik(*args), np.float64)
    floored = _logmax_pair_float64(y, means, variances, emissions.LOGMAX_FLOOR)
    exact = _logmax_pair_float64(y, means, variances)
    np.testing.assert_allclose(ours, floored, rtol=1e-5, atol=1e-3)
    reached = ~np.isclose(floored, exact, rtol=0, atol=1e-6)
    assert reached[:5].any() and not reached[5:].any()  # the test reaches the floor only on the far frames
    assert np.all(floored[reached] > exact[reached])
    np.testing.assert_allclose(ours[5:], exact[5:], rtol=1e-5, atol=1e-3)
    bad = np.asarray(emissions.logmax_log_lik(args[0].at[3, 2].set(jnp.nan), *args[1:]))
    assert np.isnan(bad[3]).all() and np.isfinite(np.delete(bad, 3, axis=0)).all()


@pytest.mark.parametrize("n_sources", [2, 3])
def test_separation_logmax_chunks_match_the_one_program(rng, monkeypatch, n_sources):
    """The separation layer's log-max log-likelihoods (two sources as two compiled steps, frames
    in chunks under a memory budget) are ``logmax_log_lik``'s."""
    from fhmm_ppl.separation.emissions import logmax

    means = [jnp.asarray(rng.normal(size=(n, 5)), jnp.float32) for n in (3, 4, 2)[:n_sources]]
    variances = [jnp.asarray(rng.uniform(0.3, 1.5, (n, 5)), jnp.float32) for n in (3, 4, 2)[:n_sources]]
    y = jnp.asarray(rng.normal(size=(70, 5)), jnp.float32)
    whole = np.asarray(emissions.logmax_log_lik(y, means, variances))
    monkeypatch.setattr(logmax, "LOG_LIK_BYTES", 4 * 24 * 5 * (n_sources + 1) * 16)  # chunks of 16 frames
    chunked = np.asarray(logmax.log_lik_chunked(y, means, variances))
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-4)
