"""Structured mean field against exact inference; the planner's choices."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_problem

from fhmm_ppl import hmm


def test_elbo_bounds_the_log_marginal_and_never_decreases(rng):
    log_init, log_trans, log_lik = random_problem(rng, (3, 2, 2), 8)
    exact = float(hmm.log_marginal(log_init, log_trans, log_lik))
    result = hmm.structured_mean_field(log_init, log_trans, log_lik, n_iter=15)
    history = np.asarray(result.elbo_history)
    assert history[-1] <= exact + 1e-4
    assert np.all(np.diff(history) >= -1e-4)


def test_mean_field_starts_from_given_marginals(rng):
    log_init, log_trans, log_lik = random_problem(rng, (3, 2), 6)
    exact = hmm.posteriors(log_init, log_trans, log_lik)
    # one sweep updates chain 0 against chain 1's starting marginals: the start must show in it
    first = [hmm.structured_mean_field(log_init, log_trans, log_lik, n_iter=1, init_marginals=start).marginals[0]
             for start in (exact.marginals, [jnp.full((6, 3), 1 / 3), jnp.asarray([[1.0, 0.0]] * 6)])]
    assert np.max(np.abs(np.asarray(first[0]) - np.asarray(first[1]))) > 1e-3
    with pytest.raises(ValueError, match="init_marginals must be K arrays of shapes"):
        hmm.structured_mean_field(log_init, log_trans, log_lik, init_marginals=[exact.marginals[0]])


def test_mean_field_over_padded_frames_is_mean_field_over_the_real_ones(rng):
    """With ``length``, frames after it (NaN here) change no marginal, count or ELBO of the real ones."""
    n_frames, pad = 40, 17
    log_init, log_trans, log_lik = random_problem(rng, (3, 4), n_frames)
    start = [rng.dirichlet(np.ones(n), size=n_frames + pad).astype(np.float32) for n in (3, 4)]
    filled = jnp.concatenate([log_lik, jnp.full((pad, 3, 4), jnp.nan)])
    padded = hmm.structured_mean_field(log_init, log_trans, filled, n_iter=5, init_marginals=start, length=n_frames)
    plain = hmm.structured_mean_field(log_init, log_trans, log_lik, n_iter=5, init_marginals=[m[:n_frames] for m in start])
    for got, want in zip(padded.marginals, plain.marginals):
        np.testing.assert_allclose(np.asarray(got)[:n_frames], want, atol=1e-5)
    for got, want in zip(padded.trans_counts, plain.trans_counts):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(padded.elbo_history, plain.elbo_history, rtol=1e-5)
    with pytest.raises(ValueError, match="length must be between 0 and the 57 frames"):
        hmm.structured_mean_field(log_init, log_trans, filled, length=n_frames + pad + 1)


def test_mean_field_is_exact_when_the_likelihood_factorises(rng):
    # log p(y_t | s) = sum_k f_k(s_k): the posterior factorises over chains, so q is exact.
    log_init, log_trans, _ = random_problem(rng, (3, 2), 1)
    terms = [jnp.asarray(rng.normal(size=(6, n)), jnp.float32) for n in (3, 2)]
    log_lik = terms[0][:, :, None] + terms[1][:, None, :]
    exact = hmm.posteriors(log_init, log_trans, log_lik)
    result = hmm.structured_mean_field(log_init, log_trans, log_lik, n_iter=5)
    assert float(result.elbo) == pytest.approx(float(exact.log_marginal), abs=1e-3)
    for approx, true in zip(result.marginals, exact.marginals):
        np.testing.assert_allclose(approx, true, atol=1e-4)


def test_mean_field_marginals_are_close_on_weakly_coupled_chains(rng):
    log_init, log_trans, _ = random_problem(rng, (3, 3), 1)
    terms = [jnp.asarray(rng.normal(size=(10, 3)) * 2, jnp.float32) for _ in range(2)]
    coupling = jnp.asarray(rng.normal(size=(10, 3, 3)) * 0.1, jnp.float32)
    log_lik = terms[0][:, :, None] + terms[1][:, None, :] + coupling
    exact = hmm.posteriors(log_init, log_trans, log_lik)
    result = hmm.structured_mean_field(log_init, log_trans, log_lik, n_iter=20)
    for approx, true in zip(result.marginals, exact.marginals):
        np.testing.assert_allclose(approx, true, atol=0.05)


def test_planner_estimates_before_allocating():
    big = hmm.plan_inference((32, 32, 32), 10_000)
    assert big.method == "mean_field" and "MiB" in big.reason
    chunked = hmm.plan_inference((32, 32, 32), 10_000, chunked_log_lik=True)
    assert chunked.method == "exact" and chunked.exact_bytes < 200 * 2**20
    assert hmm.plan_inference((64, 64), 1000).method == "exact"
    assert hmm.plan_inference((64, 64), 1000, method="mean_field").method == "mean_field"
    with pytest.raises(ValueError, match="inference method"):
        hmm.plan_inference((2,), 10, method="magic")
    # the estimate follows the chunk the smoother will really use: everything fits, so one chunk of T
    # frames (about three (T, prod N) float32 tensors), not sqrt(T)
    whole = hmm.plan_inference((32, 32), 10_000, chunked_log_lik=True)
    assert hmm.choose_chunk_size(10_000, 1024) == 10_000 and whole.exact_bytes >= 3 * 10_000 * 1024 * 4
    one_chain = hmm.plan_inference((64,), 10**9)  # mean field of one chain is exact inference
    assert one_chain.method == "exact" and "one chain" in one_chain.reason
    for n_states, n_frames in (((), 10), ((3, 0), 10), ((3,), 0)):
        with pytest.raises(ValueError, match="at least one chain, one state per chain and one frame"):
            hmm.plan_inference(n_states, n_frames)


def test_complex_gaussian_mean_field_is_linear_in_chains_and_bounds_the_exact_evidence(rng):
    from fhmm_ppl.hmm.emissions import complex_gaussian_expected_log_lik, complex_gaussian_log_lik

    n_states = (3, 4, 2)
    psd = tuple(jnp.asarray(rng.gamma(1.0, 1.0, size=(n, 6)) + 0.05, jnp.float32) for n in n_states)
    power = jnp.asarray(rng.gamma(1.0, 2.0, size=(30, 6)), jnp.float32)
    log_init = [jnp.log(jnp.ones(n) / n) for n in n_states]
    log_trans = [jnp.log(jnp.asarray(rng.dirichlet(np.ones(n) * 3, size=n), jnp.float32)) for n in n_states]
    result = hmm.structured_mean_field(log_init, log_trans, expected_log_lik=complex_gaussian_expected_log_lik,
                                       data=(power, psd), n_iter=15)
    exact = float(hmm.log_marginal(log_init, log_trans, complex_gaussian_log_lik(power, psd)))
    assert float(result.elbo) <= exact + 1e-3
    assert np.all(np.diff(np.asarray(result.elbo_history)) >= -1e-3 * abs(exact))
    assert all(np.allclose(m.sum(1), 1, atol=1e-5) for m in result.marginals)


def test_mean_field_with_impossible_joint_states_stays_finite(rng):
    """-inf log-likelihoods (impossible joint states) must not give NaN through 0 * -inf in the expectations."""
    for shape in [(3,), (3, 2), (2, 3, 2)]:
        log_init, log_trans, log_lik = random_problem(rng, shape, 6)
        log_lik = log_lik.at[3, 0].set(-jnp.inf)  # chain 0 cannot be in state 0 at frame 3
        result = hmm.structured_mean_field(log_init, log_trans, log_lik)
        exact = float(hmm.log_marginal(log_init, log_trans, log_lik))
        assert np.isfinite(float(result.elbo)) and float(result.elbo) <= exact + 1e-4
        assert float(result.marginals[0][3, 0]) == 0.0
        assert all(np.all(np.isfinite(m)) for m in result.marginals)
    with pytest.raises(ValueError, match="n_iter must be at least 1"):
        hmm.structured_mean_field(log_init, log_trans, log_lik, n_iter=0)
