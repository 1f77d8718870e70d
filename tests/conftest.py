import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


def random_problem(rng: np.random.Generator, n_states, n_frames, scale=2.0):
    """Random log_init, log_trans, log_lik (float32) for a factorial HMM."""
    import jax.numpy as jnp

    log_init = [jnp.log(jnp.asarray(rng.dirichlet(np.ones(n)), jnp.float32)) for n in n_states]
    log_trans = [jnp.log(jnp.asarray(rng.dirichlet(np.ones(n) * 2, size=n), jnp.float32)) for n in n_states]
    log_lik = jnp.asarray(rng.normal(size=(n_frames,) + tuple(n_states)) * scale, jnp.float32)
    return log_init, log_trans, log_lik


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    from fhmm_ppl.runtime import enable_compilation_cache

    enable_compilation_cache()
