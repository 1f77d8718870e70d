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


@pytest.fixture(scope="session")
def mma_tree(tmp_path_factory):
    """A generated dataset folder with the real 363 file names and channel counts (50 ms of noise each)."""
    import soundfile as sf

    from fhmm_ppl.audio import mma

    root = tmp_path_factory.mktemp("mma")
    rng = np.random.default_rng(0)
    n = 2400  # 50 ms at 48 kHz keeps the 363 files small

    def write(path, channels):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.normal(size=(n, channels))).astype(np.float32), 48000, subtype="PCM_16")

    for array, (numbers, channels) in mma.ARRAYS.items():
        for x in numbers:
            folder = root / f"{array}{x:02d}"
            for y in range(1, 11):
                write(folder / f"{array}{x:02d}_chirp{y:02d}.wav", channels)
                write(folder / f"{array}{x:02d}_speech{y:02d}.wav", channels)
            write(folder / f"{array}{x:02d}_mix.wav", channels)
            write(folder / f"{array}{x:02d}_noise.wav", channels)
    write(root / "sources" / "chirp.wav", 1)
    for y in range(1, 11):
        write(root / "sources" / f"speech{y:02d}.wav", 1)
    (root / "README.txt").write_text("not audio")
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    from fhmm_ppl.runtime import enable_compilation_cache

    enable_compilation_cache()


@pytest.fixture(scope="module")
def ray_address():
    """One local 2-CPU Ray cluster for a test module (started in this process); its address. Shut
    down when the module ends, so that no later test shares the process with a live Ray driver
    (one CI run segfaulted in XLA's compiler in the SVI test that follows the Ray tests, with
    Ray's driver threads still running: a suspect, not a proven cause)."""
    ray = pytest.importorskip("ray")
    import logging

    context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield context.address_info["address"]
    ray.shutdown()
