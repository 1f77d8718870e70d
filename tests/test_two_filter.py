"""The two-filter joint posterior, posterior expectations and the log marginal on two threads, against
brute-force enumeration over joint state paths and float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brute import brute_force, dense_smoother, path_scores
from conftest import random_problem, sticky_problem

from fhmm_ppl import hmm
from fhmm_ppl.hmm import two_filter

SHAPES = [(3,), (2, 3), (3, 2, 2)]


@pytest.mark.parametrize("n_states", SHAPES)
def test_two_filter_joint_posterior_matches_brute_force(rng, n_states):
    log_init, log_trans, log_lik = random_problem(rng, n_states, 5)
    log_z, marginals, _, _ = brute_force(log_init, log_trans, log_lik)
    joint, got_z = hmm.joint_posterior(log_init, log_trans, log_lik)
    assert float(got_z) == pytest.approx(log_z, abs=1e-4)
    axes = tuple(range(1, len(n_states) + 1))
    for k in range(len(n_states)):
        np.testing.assert_allclose(np.asarray(joint).sum(axis=tuple(a for a in axes if a != k + 1)), marginals[k],
                                   atol=2e-5)
    # above the memory bound the chunked smoother gives the same answer
    fallback, fallback_z = hmm.joint_posterior(log_init, log_trans, log_lik, max_bytes=0)
    np.testing.assert_allclose(fallback, joint, atol=2e-6)
    for max_bytes in (0, 2**30):  # flattened joint states, from either path
        flat, _ = hmm.joint_posterior(log_init, log_trans, log_lik, max_bytes=max_bytes, flat=True)
        np.testing.assert_allclose(flat, np.asarray(joint).reshape(5, -1), atol=2e-6)
    assert float(fallback_z) == pytest.approx(log_z, abs=1e-4)


@pytest.mark.parametrize("n_states", [(3,), (2, 3)])
def test_posterior_expectation_matches_enumerating_every_path(rng, n_states):
    log_init, log_trans, log_lik = random_problem(rng, n_states, 4)
    n_joint = int(np.prod(n_states))
    # mixed signs and sizes: the per-column scaling must undo itself
    values = rng.normal(size=(n_joint, 3)) * np.array([1.0, 1e6, 1e-6])
    paths, scores = path_scores(log_init, log_trans, log_lik)
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    flat_paths = np.ravel_multi_index(tuple(paths[..., k] for k in range(len(n_states))), n_states)  # (paths, T)
    expected = np.einsum("p,ptd->td", weights, values[flat_paths])
    log_z = brute_force(log_init, log_trans, log_lik)[0]
    for max_bytes in (0, 2**30):  # the chunked smoother's posterior, and the two passes
        got, got_z = hmm.posterior_expectation(log_init, log_trans, log_lik, jnp.asarray(values, jnp.float32),
                                               max_bytes=max_bytes)
        np.testing.assert_allclose(np.asarray(got) / np.abs(values).max(axis=0), expected / np.abs(values).max(axis=0),
                                   atol=2e-5)
        assert float(got_z) == pytest.approx(log_z, abs=1e-4)


def test_posterior_expectation_on_impossible_data_and_bad_values(rng):
    log_init, log_trans, log_lik = random_problem(rng, (2, 3), 5)
    values = jnp.asarray(rng.random((6, 2)), jnp.float32)
    impossible = log_lik.at[2].set(-jnp.inf)
    for max_bytes in (0, 2**30):  # both paths give zeros from the impossible frame on, not NaN
        got, log_z = hmm.posterior_expectation(log_init, log_trans, impossible, values, max_bytes=max_bytes)
        assert float(log_z) == -np.inf
        np.testing.assert_array_equal(np.asarray(got)[2:], 0.0)
        joint, log_z = hmm.joint_posterior(log_init, log_trans, impossible, max_bytes=max_bytes)
        assert float(log_z) == -np.inf
        np.testing.assert_array_equal(np.asarray(joint)[2:], 0.0)
    _, log_z = hmm.posterior_expectation(log_init, log_trans, log_lik.at[1, 0, 0].set(jnp.nan), values)
    assert np.isnan(float(log_z))
    with pytest.raises(ValueError, match=r"values must be \(prod\(N\), D\) = \(6, D\)"):
        hmm.posterior_expectation(log_init, log_trans, log_lik, values[:5])


@pytest.mark.parametrize("seed", [32, 43, 66, 75])
def test_two_filter_joint_posterior_on_sticky_chains_matches_float64(seed):
    log_init, log_trans, log_lik = sticky_problem(seed, n_frames=30)
    ref_z, ref_marginals, _ = dense_smoother(log_init, log_trans, log_lik)
    joint, log_z = hmm.joint_posterior(log_init, log_trans, log_lik)
    assert float(log_z) == pytest.approx(ref_z, abs=1e-3)
    np.testing.assert_allclose(np.asarray(joint).sum(axis=2), ref_marginals[0], atol=1e-4)
    np.testing.assert_allclose(np.asarray(joint).sum(axis=1), ref_marginals[1], atol=1e-4)
    # the unnormalised products of posterior_expectation keep the same precision
    values = jnp.asarray(np.kron(np.eye(3), np.ones((3, 1))), jnp.float32)  # (9, 3): chain 0's state indicators
    expected, log_z = hmm.posterior_expectation(log_init, log_trans, log_lik, values)
    np.testing.assert_allclose(np.asarray(expected), ref_marginals[0], atol=1e-4)
    assert float(log_z) == pytest.approx(ref_z, abs=1e-3)


def test_two_filter_joint_posterior_with_huge_log_likelihoods_and_impossible_data(rng):
    log_init, log_trans, log_lik = random_problem(rng, (2, 3), 6, scale=200.0)
    data = log_lik - 1e9
    ref_z, ref_marginals, _ = dense_smoother(log_init, log_trans, data)
    joint, log_z = hmm.joint_posterior(log_init, log_trans, data)
    np.testing.assert_allclose(np.asarray(joint).sum(axis=2), ref_marginals[0], atol=1e-5)
    assert float(log_z) == pytest.approx(ref_z, rel=1e-6)
    joint, log_z = hmm.joint_posterior(log_init, log_trans, log_lik.at[2].set(-jnp.inf))
    assert float(log_z) == -np.inf and np.all(np.isfinite(np.asarray(joint)))
    _, log_z = hmm.joint_posterior(log_init, log_trans, log_lik.at[2, 0, 0].set(jnp.nan))
    assert np.isnan(float(log_z))


def test_two_filter_joint_posterior_of_a_64_by_64_state_pair_equals_the_smoother(rng):
    # Large enough for the backward thread to overlap the forward pass; the product of the two
    # normalised messages needs its headroom on these peaky frames.
    log_init, log_trans, log_lik = random_problem(rng, (64, 64), 200, scale=30.0)
    joint, log_z = hmm.joint_posterior(log_init, log_trans, log_lik)
    post = hmm.posteriors(log_init, log_trans, log_lik, joint=True)
    np.testing.assert_allclose(joint, post.joint, atol=1e-5)
    assert float(log_z) == pytest.approx(float(post.log_marginal), rel=1e-5)


def test_two_filter_product_keeps_states_both_messages_hold_unlikely():
    # The filter is sure of state 0, the future of state 2, and only state 1 (1e-20 under each)
    # is consistent with both: its product, 1e-40, is below float32's normal range.
    alphas = jnp.asarray([[1.0, 1e-20, 0.0], [0.5, 0.5, 0.0]], jnp.float32)  # (T, prod N)
    betas = jnp.asarray([[0.0, 1e-20, 1.0], [0.25, 0.75, 0.0]], jnp.float32)
    np.testing.assert_allclose(np.asarray(two_filter._combine(alphas, betas)), [[0.0, 1.0, 0.0], [0.25, 0.75, 0.0]], atol=1e-6)


# --------------------------------------------------------------------------- log marginal on two threads (explicit)


@pytest.mark.parametrize("n_states", SHAPES)
@pytest.mark.parametrize("n_frames", [2, 3, 4])
def test_log_marginal_two_threads_matches_brute_force(rng, n_states, n_frames):
    log_init, log_trans, log_lik = random_problem(rng, n_states, n_frames)
    log_z = brute_force(log_init, log_trans, log_lik)[0]
    assert float(hmm.log_marginal_two_threads(log_init, log_trans, log_lik)) == pytest.approx(log_z, abs=1e-4)


@pytest.mark.parametrize("seed", [32, 43, 66, 75])
def test_log_marginal_two_threads_on_sticky_chains_and_huge_values_matches_float64(seed):
    log_init, log_trans, log_lik = sticky_problem(seed, n_frames=30)
    for data in (log_lik, log_lik - 1e9):
        ref_z = dense_smoother(log_init, log_trans, data)[0]
        assert float(hmm.log_marginal_two_threads(log_init, log_trans, data)) == pytest.approx(ref_z, abs=1e-3, rel=1e-6)


def test_log_marginal_two_threads_of_impossible_and_nan_data(rng):
    log_init, log_trans, log_lik = random_problem(rng, (2, 3), 8)
    for t in (0, 3, 4, 7):  # in either half, at its ends and at the meeting point
        assert float(hmm.log_marginal_two_threads(log_init, log_trans, log_lik.at[t].set(-jnp.inf))) == -np.inf
        assert np.isnan(float(hmm.log_marginal_two_threads(log_init, log_trans, log_lik.at[t, 1, 2].set(jnp.nan))))
    # possible frame by frame, impossible together: chain 0 cannot leave state 0, the second half needs state 1
    stuck = [jnp.log(jnp.asarray([[1.0, 0.0], [0.5, 0.5]], jnp.float32)), log_trans[1]]
    data = log_lik.at[:4, 1].set(-jnp.inf).at[4:, 0].set(-jnp.inf)
    assert float(hmm.log_marginal(log_init, stuck, data)) == -np.inf
    assert float(hmm.log_marginal_two_threads(log_init, stuck, data)) == -np.inf


def test_log_marginal_two_threads_survives_transition_columns_summing_far_above_one():
    # Every state of both 128-state chains but state 0 jumps to state 0, state 0 jumps to 1, and
    # the frames alternate between the joint states (0, 0) and (1, 1): a message pulled back from
    # a frame that favours (0, 0) sums to ~127^2 times its best frame likelihood, which overflowed
    # float32 (inf, then NaN) unless the backward half's headroom is lowered by log(128^2).
    n = 128
    trans = np.full((n, n), 1e-6 / (n - 1), np.float32)
    trans[1:, 0] = 1 - 1e-6
    trans[0, 0], trans[0, 1] = 1e-6 / (n - 1), 1 - 1e-6
    log_init = [jnp.log(jnp.full(n, 1 / n, jnp.float32))] * 2
    log_trans = [jnp.log(jnp.asarray(trans))] * 2
    log_lik = jnp.full((6, n, n), -50.0, jnp.float32)
    for t in range(6):
        log_lik = log_lik.at[t, t % 2, t % 2].set(0.0)
    single = float(hmm.log_marginal(log_init, log_trans, log_lik))
    assert np.isfinite(single)
    assert float(hmm.log_marginal_two_threads(log_init, log_trans, log_lik)) == pytest.approx(single, abs=1e-3)


def test_log_marginal_is_one_computation_eager_or_traced(rng):
    # Large enough that a split over two threads would pay: log_marginal must not take it.
    log_init, log_trans, log_lik = random_problem(rng, (32, 32), 1200, scale=3.0)
    assert two_filter.worth_two_threads(log_lik.shape) and not two_filter.worth_two_threads((1200, 4, 4))
    eager = np.asarray(hmm.log_marginal(log_init, log_trans, log_lik))
    jitted = np.asarray(jax.jit(hmm.log_marginal)(log_init, log_trans, log_lik))
    value, grad = jax.value_and_grad(lambda ll: hmm.log_marginal(log_init, log_trans, ll))(log_lik)
    assert eager.tobytes() == jitted.tobytes() == np.asarray(value).tobytes()
    np.testing.assert_allclose(np.asarray(grad).reshape(1200, -1).sum(axis=1), 1.0, atol=1e-4)
    # the two-thread split is a separate, explicit choice: the same value up to float32 rounding
    assert float(hmm.log_marginal_two_threads(log_init, log_trans, log_lik)) == pytest.approx(float(eager), rel=1e-5)
    with pytest.raises(ValueError, match="log_marginal_two_threads needs concrete arrays"):
        jax.jit(hmm.log_marginal_two_threads)(log_init, log_trans, log_lik)
    one_frame = log_lik[:1]
    assert float(hmm.log_marginal_two_threads(log_init, log_trans, one_frame)) == float(
        hmm.log_marginal(log_init, log_trans, one_frame))
