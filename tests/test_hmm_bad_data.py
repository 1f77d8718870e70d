"""The package's one policy for bad data, held by every pass (see ``fhmm_ppl.hmm``'s docstring).

NaN at an observed frame: every float output NaN, every path -1. Impossible data: log marginal
-inf, posteriors and gradients zero, paths -1. NaN wins over impossible; padding is never read.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_problem

from fhmm_ppl import hmm

T = 6


def problem(kind: str):
    """A (2, 3)-state problem of T frames with bad data of the given kind."""
    log_init, log_trans, log_lik = random_problem(np.random.default_rng(7), (2, 3), T)
    if kind == "impossible frame":
        log_lik = log_lik.at[2].set(-jnp.inf)
    elif kind == "impossible together":
        # possible frame by frame: chain 0 cannot leave state 0, the later frames need state 1
        log_trans = [jnp.log(jnp.asarray([[1.0, 0.0], [0.5, 0.5]], jnp.float32)), log_trans[1]]
        log_lik = log_lik.at[:3, 1].set(-jnp.inf).at[3:, 0].set(-jnp.inf)
    elif kind == "nan":
        log_lik = log_lik.at[2, 1, 1].set(jnp.nan)
    elif kind == "nan and impossible":
        log_lik = log_lik.at[1].set(-jnp.inf).at[4, 0, 0].set(jnp.nan)
    return log_init, log_trans, log_lik


KINDS = ["impossible frame", "impossible together", "nan", "nan and impossible"]


def expect_floats(kind, *arrays):
    """NaN everywhere for NaN data, zero everywhere for impossible data."""
    for a in arrays:
        a = np.asarray(a)
        if "nan" in kind:
            assert np.all(np.isnan(a)), a
        else:
            np.testing.assert_array_equal(a, 0.0)


def expect_log_z(kind, value):
    value = float(value)
    assert np.isnan(value) if "nan" in kind else value == -np.inf


@pytest.mark.parametrize("kind", KINDS)
def test_log_marginals_and_gradients(kind):
    log_init, log_trans, log_lik = problem(kind)
    expect_log_z(kind, hmm.log_marginal(log_init, log_trans, log_lik))
    expect_log_z(kind, jax.jit(hmm.log_marginal)(log_init, log_trans, log_lik))
    expect_log_z(kind, hmm.log_marginal_two_threads(log_init, log_trans, log_lik))
    grad_lik, grad_trans = jax.grad(lambda ll, lt: hmm.log_marginal(log_init, lt, ll), argnums=(0, 1))(
        log_lik, log_trans)
    expect_floats(kind, grad_lik, *grad_trans)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_smoother(kind, chunk_size):
    log_init, log_trans, log_lik = problem(kind)
    post = hmm.posteriors(log_init, log_trans, log_lik, trans_counts=True, joint=True, chunk_size=chunk_size)
    expect_log_z(kind, post.log_marginal)
    expect_floats(kind, *post.marginals, *post.trans_counts, post.joint)
    chunked = hmm.posteriors_chunked(log_init, log_trans, lambda x, p: x, log_lik, chunk_size=chunk_size,
                                     trans_counts=True)
    expect_log_z(kind, chunked.log_marginal)
    expect_floats(kind, *chunked.marginals, *chunked.trans_counts)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("max_bytes", [0, 2**30])  # the chunked smoother's fallback, and the two passes
def test_two_filter_passes(kind, max_bytes):
    log_init, log_trans, log_lik = problem(kind)
    joint, log_z = hmm.joint_posterior(log_init, log_trans, log_lik, max_bytes=max_bytes)
    expect_log_z(kind, log_z)
    expect_floats(kind, joint)
    values = jnp.asarray(np.random.default_rng(0).random((6, 2)), jnp.float32)
    means, log_z = hmm.posterior_expectation(log_init, log_trans, log_lik, values, max_bytes=max_bytes)
    expect_log_z(kind, log_z)
    expect_floats(kind, means)


@pytest.mark.parametrize("kind", KINDS)
def test_paths_are_minus_one(kind):
    log_init, log_trans, log_lik = problem(kind)
    for chunk_size in (None, 2):
        np.testing.assert_array_equal(hmm.viterbi(log_init, log_trans, log_lik, chunk_size=chunk_size), -1)
    path = hmm.sample_posterior(jax.random.PRNGKey(0), log_init, log_trans, log_lik)
    assert path.shape == (T, 2)
    np.testing.assert_array_equal(path, -1)


def test_mean_field():
    log_init, log_trans, log_lik = problem("nan")
    result = hmm.structured_mean_field(log_init, log_trans, log_lik, n_iter=3)
    assert np.isnan(float(result.elbo)) and all(np.all(np.isnan(m)) for m in result.marginals)
    from fhmm_ppl.hmm.variational import IMPOSSIBLE_LOG_LIK

    for kind in ("impossible frame", "impossible together"):
        result = hmm.structured_mean_field(*problem(kind), n_iter=3)
        assert float(result.elbo) <= IMPOSSIBLE_LOG_LIK / 2
        assert all(np.all(np.isfinite(m)) for m in result.marginals)


def test_padding_is_never_read():
    log_init, log_trans, log_lik = random_problem(np.random.default_rng(3), (2, 3), T)
    for fill in (jnp.nan, -jnp.inf):
        padded = jnp.concatenate([log_lik, jnp.full((3, 2, 3), fill)])
        assert float(hmm.log_marginal(log_init, log_trans, padded, T)) == pytest.approx(
            float(hmm.log_marginal(log_init, log_trans, log_lik)), abs=1e-4)
        post = hmm.posteriors(log_init, log_trans, padded, T, trans_counts=True, chunk_size=4)
        assert np.isfinite(float(post.log_marginal))
        assert all(np.all(np.isfinite(c)) for c in post.trans_counts)
        assert all(np.all(np.isfinite(m[:T])) for m in post.marginals)
        np.testing.assert_array_equal(hmm.viterbi(log_init, log_trans, padded, T)[:T],
                                      hmm.viterbi(log_init, log_trans, log_lik))
        grad = jax.grad(lambda ll: hmm.log_marginal(log_init, log_trans, ll, T))(padded)
        assert np.all(np.isfinite(grad)) and float(jnp.abs(grad[T:]).max()) == 0.0
