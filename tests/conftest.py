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


def sticky_problem(seed: int, n_frames: int = 10):
    """Two 3-state chains switching with probability 1e-12 (EM's floor) and frames whose
    log-likelihoods spread over hundreds of nats, as STFT frames under the complex Gaussian."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    trans = np.full((3, 3), 1e-12) + np.eye(3) * (1 - 2e-12)
    log_init = [jnp.log(jnp.full(3, 1 / 3, jnp.float32))] * 2
    log_trans = [jnp.log(jnp.asarray(trans, jnp.float32))] * 2
    spread = rng.choice([100, 200, 400])
    return log_init, log_trans, jnp.asarray(-rng.uniform(0, spread, size=(n_frames, 3, 3)), jnp.float32)


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


@pytest.fixture(autouse=True)
def _compiled_programs_within_the_memory_map_cap():
    """The whole suite compiles about 20 000 programs in one process, three memory maps each: past
    half the kernel's cap, JAX's caches are dropped (else a compilation near the cap segfaults)."""
    from fhmm_ppl.runtime import release_compiled_programs_if_crowded

    release_compiled_programs_if_crowded()


def pytest_configure(config):
    from fhmm_ppl.runtime import enable_compilation_cache

    enable_compilation_cache()


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray cluster for a test module, started by ``ray start --head --block`` in a
    process of its own; its address. Ray is never imported into the test process (its gRPC runtime
    and threads stay out of it): every sweep on the cluster runs from a CLI subprocess. SIGTERM
    stops the cluster: ``--block`` shuts every process it started down on that signal."""
    import importlib.util
    import secrets
    import shutil
    import socket
    import subprocess
    import tempfile
    import threading
    from pathlib import Path

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    with socket.socket() as probe:  # a free port for the cluster's GCS
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The cluster and every process that joins it (the CLI subprocesses inherit this environment)
    # share a token of the module's own, whatever ~/.ray holds.
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "token")
    patch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    patch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    # A folder of the cluster's own (short: Ray's sockets live there), so that the address file `ray
    # start` writes (which a later ray.init() without an address would try to join) goes with it.
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={folder}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, started = [], threading.Event()

    def read():  # read all it prints, so that it never blocks on a full pipe
        for line in head.stdout:
            seen.append(line)
            if "Ray runtime started" in line:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not started.wait(timeout=120):
            pytest.fail("ray start --head did not start a cluster:\n" + "".join(seen[-30:]))
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        patch.undo()
        shutil.rmtree(folder, ignore_errors=True)
