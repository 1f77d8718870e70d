"""Exact inference against brute-force enumeration over joint state paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brute import brute_force, dense_smoother
from conftest import random_problem, sticky_problem
from hypothesis import given, settings
from hypothesis import strategies as st

from fhmm_ppl import hmm

SHAPES = [(3,), (2, 3), (3, 2, 2)]


@pytest.mark.parametrize("n_states", SHAPES)
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_matches_brute_force(rng, n_states, chunk_size):
    log_init, log_trans, log_lik = random_problem(rng, n_states, 5)
    log_z, marginals, counts, best = brute_force(log_init, log_trans, log_lik)

    assert float(hmm.log_marginal(log_init, log_trans, log_lik)) == pytest.approx(log_z, abs=1e-4)
    post = hmm.posteriors(log_init, log_trans, log_lik, trans_counts=True, joint=True, chunk_size=chunk_size)
    assert float(post.log_marginal) == pytest.approx(log_z, abs=1e-4)
    for k in range(len(n_states)):
        np.testing.assert_allclose(post.marginals[k], marginals[k], atol=2e-5)
        np.testing.assert_allclose(post.trans_counts[k], counts[k], atol=2e-5)
        np.testing.assert_allclose(post.joint.sum(axis=tuple(a for a in range(1, len(n_states) + 1) if a != k + 1)),
                                   marginals[k], atol=2e-5)
    path = hmm.viterbi(log_init, log_trans, log_lik, chunk_size=chunk_size)
    assert path.shape == (5, len(n_states))
    assert float(hmm.path_log_prob(log_init, log_trans, log_lik, path)) == pytest.approx(best, abs=1e-4)


def test_gradient_of_log_marginal_is_the_joint_posterior(rng):
    log_init, log_trans, log_lik = random_problem(rng, (3, 2), 6)
    grad = jax.grad(lambda ll: hmm.log_marginal(log_init, log_trans, ll))(log_lik)
    joint = hmm.posteriors(log_init, log_trans, log_lik, joint=True).joint
    np.testing.assert_allclose(grad, joint, atol=1e-5)
    post = hmm.posteriors(log_init, log_trans, log_lik, trans_counts=True)
    grads = jax.grad(lambda lt: hmm.log_marginal(log_init, lt, log_lik))(log_trans)
    for k, g in enumerate(grads):  # d log p / d log A_k = expected transition counts
        np.testing.assert_allclose(g, post.trans_counts[k], atol=1e-5)
    grads = jax.grad(lambda li: hmm.log_marginal(li, log_trans, log_lik))(log_init)
    for k, g in enumerate(grads):  # d log p / d log pi_k = first-frame marginals
        np.testing.assert_allclose(g, post.marginals[k][0], atol=1e-5)
    # ... and both agree with finite differences of the log marginal itself.
    step = 1e-2
    for k, i, j in ((0, 1, 2), (1, 0, 1)):
        bump = lambda d: tuple(lt.at[i, j].add(d) if m == k else lt for m, lt in enumerate(log_trans))
        diff = (float(hmm.log_marginal(log_init, bump(step), log_lik)) - float(hmm.log_marginal(log_init, bump(-step), log_lik))) / (2 * step)
        assert diff == pytest.approx(float(post.trans_counts[k][i, j]), abs=2e-3)


def test_gradients_stay_finite_for_peaky_likelihoods():
    """Both chains jump at every frame through transitions of probability 1e-13 to the only likely
    joint state: the log marginal is finite, and so must its gradient be (autodiff through the scaled
    recursion would divide by squared frame totals of ~1e-26, which underflow: NaN)."""
    def sticky(n, eps):
        trans = np.full((n, n), eps)
        np.fill_diagonal(trans, 1 - eps * (n - 1))
        return jnp.log(jnp.asarray(trans, jnp.float32))

    n_frames = 12
    log_init = (jnp.log(jnp.full(3, 1 / 3)), jnp.log(jnp.full(2, 1 / 2)))
    log_trans = (sticky(3, 1e-13), sticky(2, 1e-13))
    log_lik = np.full((n_frames, 3, 2), -1e4, np.float32)
    log_lik[np.arange(n_frames), np.arange(n_frames) % 3, np.arange(n_frames) % 2] = 0.0
    log_lik = jnp.asarray(log_lik)
    assert np.isfinite(float(hmm.log_marginal(log_init, log_trans, log_lik)))
    grad = jax.grad(lambda ll: hmm.log_marginal(log_init, log_trans, ll))(log_lik)
    np.testing.assert_allclose(grad, hmm.posteriors(log_init, log_trans, log_lik, joint=True).joint, atol=1e-6)
    assert float(grad.sum()) == pytest.approx(n_frames)
    grads = jax.grad(lambda lt: hmm.log_marginal(log_init, lt, log_lik))(log_trans)
    assert all(float(g.sum()) == pytest.approx(n_frames - 1) for g in grads)
    # padded frames are unobserved: no gradient reaches their log-likelihoods, under vmap too
    lengths = jnp.array([n_frames, 7])
    batch = jnp.stack([log_lik, log_lik])
    grad = jax.grad(lambda b: jax.vmap(lambda ll, n: hmm.log_marginal(log_init, log_trans, ll, n))(b, lengths).sum())(batch)
    assert float(grad[0].sum()) == pytest.approx(n_frames) and float(grad[1].sum()) == pytest.approx(7)
    assert float(jnp.abs(grad[1, 7:]).max()) == 0.0


def test_padding_leaves_results_unchanged(rng):
    log_init, log_trans, log_lik = random_problem(rng, (3, 2), 7)
    garbage = jnp.asarray(rng.normal(size=(5, 3, 2)) * 50, jnp.float32)
    padded = jnp.concatenate([log_lik, garbage])
    assert float(hmm.log_marginal(log_init, log_trans, padded, 7)) == pytest.approx(
        float(hmm.log_marginal(log_init, log_trans, log_lik)), abs=1e-4
    )
    full = hmm.posteriors(log_init, log_trans, log_lik, trans_counts=True)
    cut = hmm.posteriors(log_init, log_trans, padded, 7, trans_counts=True, chunk_size=4)
    for k in range(2):
        np.testing.assert_allclose(cut.marginals[k][:7], full.marginals[k], atol=1e-5)
        np.testing.assert_allclose(cut.trans_counts[k], full.trans_counts[k], atol=1e-5)
    np.testing.assert_array_equal(hmm.viterbi(log_init, log_trans, padded, 7)[:7], hmm.viterbi(log_init, log_trans, log_lik))


def test_vmap_over_a_batch_equals_a_loop(rng):
    log_init, log_trans, _ = random_problem(rng, (2, 3), 1)
    batch = jnp.asarray(rng.normal(size=(4, 9, 2, 3)), jnp.float32)
    lengths = jnp.array([9, 5, 7, 1])
    batched = jax.vmap(lambda ll, n: hmm.log_marginal(log_init, log_trans, ll, n))(batch, lengths)
    looped = [float(hmm.log_marginal(log_init, log_trans, batch[b, : int(n)])) for b, n in enumerate(lengths)]
    np.testing.assert_allclose(batched, looped, rtol=1e-5)
    marg = jax.vmap(lambda ll, n: hmm.posteriors(log_init, log_trans, ll, n).marginals[1])(batch, lengths)
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(
            marg[b, : int(n)], hmm.posteriors(log_init, log_trans, batch[b, : int(n)]).marginals[1], atol=1e-5
        )


def test_long_sequences_stay_finite_and_chunking_is_exact(rng):
    n_frames = 100_000
    log_init, log_trans, _ = random_problem(rng, (4, 3), 1)
    log_lik = jnp.asarray(rng.normal(size=(n_frames, 4, 3)) * 5 - 20, jnp.float32)
    value = float(hmm.log_marginal(log_init, log_trans, log_lik))
    assert np.isfinite(value)
    post = hmm.posteriors(log_init, log_trans, log_lik, trans_counts=True, chunk_size=1000)
    assert float(post.log_marginal) == pytest.approx(value, rel=1e-5)
    assert all(np.all(np.isfinite(m)) for m in post.marginals)
    np.testing.assert_allclose(post.marginals[0].sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(sum(c.sum() for c in post.trans_counts[:1]), n_frames - 1, rtol=1e-4)


def test_impossible_data_give_minus_infinity_not_nan(rng):
    log_init, log_trans, log_lik = random_problem(rng, (2, 2), 4)
    log_lik = log_lik.at[2].set(-jnp.inf)
    assert float(hmm.log_marginal(log_init, log_trans, log_lik)) == -np.inf


def test_unlikely_jumps_stay_finite_where_float32_products_underflow():
    # Sticky chains (switching probability 1e-12, the training floor) and data that jump twice to
    # states the prediction gives ~1e-24: deferring normalisation by one frame would multiply two
    # such factors (1e-48, below float32's range) and return -inf for data with a finite likelihood.
    n = 3
    trans = np.full((n, n), 1e-12) + np.eye(n) * (1 - (n - 1) * 1e-12)
    init = np.array([1 - 2e-12, 1e-12, 1e-12])
    log_init, log_trans = [jnp.log(jnp.asarray(init, jnp.float32))] * 2, [jnp.log(jnp.asarray(trans, jnp.float32))] * 2
    log_lik = np.full((4, n, n), -1e4, np.float32)
    for t, state in enumerate([0, 2, 1, 1]):
        log_lik[t, state, state] = 0.0
    expected = brute_force(log_init, log_trans, log_lik)[0]
    got = float(hmm.log_marginal(log_init, log_trans, jnp.asarray(log_lik)))
    assert np.isfinite(expected) and got == pytest.approx(expected, rel=1e-5)
    post = hmm.posteriors(log_init, log_trans, jnp.asarray(log_lik))
    assert float(post.log_marginal) == pytest.approx(expected, rel=1e-5)


def test_dense_float64_reference_matches_brute_force(rng):
    log_init, log_trans, log_lik = random_problem(rng, (2, 3), 4)
    log_z, marginals, counts, _ = brute_force(log_init, log_trans, log_lik)
    ref_z, ref_marginals, ref_counts = dense_smoother(log_init, log_trans, log_lik)
    assert ref_z == pytest.approx(log_z, abs=1e-9)
    for got, want in zip(ref_marginals + ref_counts, marginals + counts):
        np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("seed", [32, 43, 66, 75])
def test_sticky_chains_with_widely_spread_likelihoods_match_float64(seed):
    # Each seed needs the likelihood headroom: without it states 87 nats below a frame's best
    # flush to zero, the data then favour them, and the log marginal comes out nats too low with
    # wrong posteriors; the textbook backward recursion would also make beta far too large
    # (posteriors summing to far more than one).
    log_init, log_trans, log_lik = sticky_problem(seed)
    ref_z, ref_marginals, ref_counts = dense_smoother(log_init, log_trans, log_lik)
    assert float(hmm.log_marginal(log_init, log_trans, log_lik)) == pytest.approx(ref_z, abs=1e-3)
    for chunk_size in (None, 3):
        post = hmm.posteriors(log_init, log_trans, log_lik, trans_counts=True, joint=True, chunk_size=chunk_size)
        assert float(post.log_marginal) == pytest.approx(ref_z, abs=1e-3)
        for got, want in zip(post.marginals, ref_marginals):
            np.testing.assert_allclose(got, want, atol=1e-4)
        for got, want in zip(post.trans_counts, ref_counts):
            np.testing.assert_allclose(got, want, atol=1e-3)
        np.testing.assert_allclose(np.asarray(post.joint).reshape(log_lik.shape[0], -1).sum(1), 1.0, atol=1e-5)


def test_huge_log_likelihoods_match_float64(rng):
    # STFT frames give log-likelihoods of -1e9 and below; float32 cannot hold (top - headroom)
    # exactly there: shifting by a rounded (top - headroom) would give exp(+ulp) = inf and NaN.
    log_init, log_trans, log_lik = random_problem(rng, (2, 3), 6, scale=200.0)
    for offset in (-3e8, -1e9, -1.25e13):
        data = log_lik + offset  # float32: the differences between states are rounded to its spacing
        ref_z, ref_marginals, ref_counts = dense_smoother(log_init, log_trans, data)
        post = hmm.posteriors(log_init, log_trans, data, trans_counts=True)
        # at 1.25e13 even float64 keeps only ~1e-3 of the transition log-probabilities
        atol = 1e-2 if offset < -1e12 else 1e-5
        for got, want in zip(post.marginals + post.trans_counts, ref_marginals + ref_counts):
            np.testing.assert_allclose(got, want, atol=atol)
        assert float(post.log_marginal) == pytest.approx(ref_z, rel=1e-6)
        assert float(hmm.log_marginal(log_init, log_trans, data)) == pytest.approx(ref_z, rel=1e-6)


def test_bad_shapes_are_rejected_with_clear_messages(rng):
    log_init, log_trans, log_lik = random_problem(rng, (2, 3), 4)
    with pytest.raises(ValueError, match=r"log_lik must have shape \(T, 2, 3\)"):
        hmm.log_marginal(log_init, log_trans, log_lik[..., :2])
    with pytest.raises(ValueError, match="log_trans\\[1\\] must be"):
        hmm.posteriors(log_init, [log_trans[0], log_trans[0]], log_lik)
    with pytest.raises(ValueError, match="chains"):
        hmm.viterbi(log_init, log_trans[:1], log_lik)


@settings(max_examples=15, deadline=None)
@given(
    n_states=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    n_frames=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_posteriors_are_distributions(n_states, n_frames, seed):
    log_init, log_trans, log_lik = random_problem(np.random.default_rng(seed), n_states, n_frames)
    post = hmm.posteriors(log_init, log_trans, log_lik, trans_counts=True)
    for k, marg in enumerate(post.marginals):
        np.testing.assert_allclose(marg.sum(axis=1), 1.0, atol=1e-5)
        assert float(post.trans_counts[k].sum()) == pytest.approx(n_frames - 1, abs=1e-4)


def test_posterior_sampling_matches_exact_marginals(rng):
    log_init, log_trans, log_lik = random_problem(rng, (2, 3), 5, scale=1.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    paths = jax.vmap(lambda key: hmm.sample_posterior(key, log_init, log_trans, log_lik))(keys)
    post = hmm.posteriors(log_init, log_trans, log_lik)
    for k, n in enumerate((2, 3)):
        empirical = np.stack([(np.asarray(paths[:, :, k]) == i).mean(axis=0) for i in range(n)], axis=1)
        np.testing.assert_allclose(empirical, post.marginals[k], atol=0.04)


def test_prior_sampling_follows_the_transition_matrix(rng):
    log_init, log_trans, _ = random_problem(rng, (3,), 1)
    path = np.asarray(hmm.sample_prior(jax.random.PRNGKey(3), log_init, log_trans, 20_000))[:, 0]
    counts = np.zeros((3, 3))
    np.add.at(counts, (path[:-1], path[1:]), 1)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), np.exp(log_trans[0]), atol=0.03)


def test_chunked_log_likelihoods_equal_the_dense_path(rng):
    from fhmm_ppl.hmm.emissions import complex_gaussian_log_lik
    from fhmm_ppl.models import make_family

    family = make_family("complex_gaussian")
    psd = (jnp.asarray(rng.uniform(0.1, 2, (3, 8)), jnp.float32), jnp.asarray(rng.uniform(0.1, 2, (2, 8)), jnp.float32))
    params = family.from_sites({"psd_0": psd[0], "psd_1": psd[1]}, 2)
    power = jnp.asarray(rng.exponential(size=(23, 8)), jnp.float32)
    log_init, log_trans, _ = random_problem(rng, (3, 2), 1)
    dense = hmm.posteriors(log_init, log_trans, complex_gaussian_log_lik(power, psd))
    chunked = hmm.posteriors_chunked(log_init, log_trans, family.log_lik, power, params, chunk_size=5)
    assert float(chunked.log_marginal) == pytest.approx(float(dense.log_marginal), rel=1e-5)
    for a, b in zip(chunked.marginals, dense.marginals):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_arrays_instead_of_lists_and_nan_data_are_reported(rng):
    log_init, log_trans, log_lik = random_problem(rng, (3,), 4)
    with pytest.raises(ValueError, match="log_init must be a list or tuple with one array per chain"):
        hmm.log_marginal(log_init[0], log_trans, log_lik)
    nan_lik = log_lik.at[2, 1].set(jnp.nan)
    assert np.isnan(float(hmm.log_marginal(log_init, log_trans, nan_lik)))
    assert np.isnan(float(hmm.posteriors(log_init, log_trans, nan_lik).log_marginal))


def test_lengths_and_chunk_sizes_are_checked(rng):
    log_init, log_trans, log_lik = random_problem(rng, (3, 2), 5)
    with pytest.raises(ValueError, match="length must be one int per sequence"):
        hmm.log_marginal(log_init, log_trans, log_lik, jnp.array([3, 4]))
    for bad in (-1, 6):
        with pytest.raises(ValueError, match="length must be between 0 and the 5 frames given"):
            hmm.posteriors(log_init, log_trans, log_lik, bad)
    with pytest.raises(ValueError, match="chunk_size must be a positive number of frames"):
        hmm.viterbi(log_init, log_trans, log_lik, chunk_size=-2)
    # traced lengths (vmap, jit) are not inspected
    batch = jnp.stack([log_lik, log_lik])
    values = jax.vmap(lambda ll, n: hmm.log_marginal(log_init, log_trans, ll, n))(batch, jnp.array([5, 2]))
    assert float(values[0]) == pytest.approx(float(hmm.log_marginal(log_init, log_trans, log_lik)), abs=1e-5)


def test_long_sequences_keep_float32_precision(rng):
    # log c_t sits near the likelihood headroom and the shift near its negative: summed apart over
    # T frames they would cancel and leave float32 noise of order 80 T * 2^-24 in the result.
    log_init, log_trans, _ = random_problem(rng, (2, 3), 1)
    log_lik = jnp.asarray(rng.normal(size=(20_000, 2, 3)), jnp.float32)
    ref_z = dense_smoother(log_init, log_trans, log_lik)[0]
    assert float(hmm.log_marginal(log_init, log_trans, log_lik)) == pytest.approx(ref_z, rel=1e-6)
    assert float(hmm.posteriors(log_init, log_trans, log_lik, chunk_size=1000).log_marginal) == pytest.approx(
        ref_z, rel=1e-6)
    assert float(hmm.joint_posterior(log_init, log_trans, log_lik)[1]) == pytest.approx(ref_z, rel=1e-6)
