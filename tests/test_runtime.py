"""Runtime settings: the helper thread that runs a second computation beside the caller's, the threads
that run independent pipelines side by side; the compilation cache."""

import os
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fhmm_ppl.runtime import (
    ONE_THREAD,
    memory_maps,
    numpy_blas_on_one_thread,
    one_thread_env,
    release_compiled_programs_if_crowded,
    run_beside,
    run_each,
)


def test_run_beside_runs_the_second_callable_on_the_helper_thread():
    here = threading.current_thread().name
    first, second = run_beside(lambda: threading.current_thread().name, lambda: threading.current_thread().name)
    assert first == here and second.startswith("fhmm-helper")


def test_one_thread_env_runs_both_callables_here_and_keeps_the_users_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    env = one_thread_env()
    assert env["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/x ") and "intra_op_parallelism_threads=1" in env["XLA_FLAGS"]
    monkeypatch.setenv(ONE_THREAD, env[ONE_THREAD])
    here = threading.current_thread()
    assert run_beside(threading.current_thread, threading.current_thread) == (here, here)


def test_work_handed_to_the_helper_that_hands_work_on_does_not_wait_for_itself():
    # In a fresh process: if the helper waited for itself, its one worker would hang for good.
    code = textwrap.dedent("""
        from fhmm_ppl.runtime import ONE_THREAD, one_thread_env, run_beside
        print(run_beside(lambda: 1, lambda: run_beside(lambda: 2, lambda: 3)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, (2, 3))"


def test_run_each_keeps_the_order_runs_on_its_threads_and_inner_work_in_turn():
    barrier = threading.Barrier(3, timeout=10)  # three items at once, or the barrier times out

    def work(item):
        barrier.wait()
        inner = run_beside(lambda: threading.current_thread().name, lambda: threading.current_thread().name)
        return item, threading.current_thread().name, inner

    out = run_each(work, [3, 1, 2])
    assert [item for item, _, _ in out] == [3, 1, 2]
    assert len({name for _, name, _ in out}) == 3 and all(name.startswith("fhmm-each") for _, name, _ in out)
    assert all(inner == (name, name) for _, name, inner in out)


def test_run_each_runs_in_turn_here_for_one_item_or_one_thread_and_passes_errors_on(monkeypatch):
    here = threading.current_thread()
    assert run_each(lambda _: threading.current_thread(), [0]) == [here]
    monkeypatch.setenv(ONE_THREAD, "1")
    assert run_each(lambda _: threading.current_thread(), [0, 1]) == [here, here]
    monkeypatch.delenv(ONE_THREAD)
    with pytest.raises(ZeroDivisionError):
        run_each(lambda item: 1 / item, [1, 0])


def blas_threads() -> set:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_numpy_blas_runs_on_one_thread_inside_nested_blocks_of_the_main_thread_and_as_before_after():
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        assert blas_threads() == {2}
        seen = []

        def elsewhere():  # a block on another thread leaves the limits alone
            with numpy_blas_on_one_thread():
                seen.append(blas_threads())

        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join(10)
        with numpy_blas_on_one_thread():
            seen.append(blas_threads())
            with numpy_blas_on_one_thread():
                seen.append(blas_threads())
                worker = threading.Thread(target=elsewhere)  # its BLAS calls see the main thread's limit
                worker.start()
                worker.join(10)
            seen.append(blas_threads())
        assert seen == [{2}, {1}, {1}, {1}, {1}]
        assert blas_threads() == {2}

        @numpy_blas_on_one_thread()
        def fails():
            assert blas_threads() == {1}
            raise KeyError("inside")

        with pytest.raises(KeyError):
            fails()
        assert blas_threads() == {2}


def test_every_kernel_is_cached_and_read_back_by_a_fresh_process(tmp_path):
    # A kernel that compiles in milliseconds (JAX's default thresholds would not keep it) is written
    # under $FHMM_PPL_CACHE/jax by one process and read back, not compiled, by the next.
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from fhmm_ppl.runtime import enable_compilation_cache
        events = []
        jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
        print(enable_compilation_cache())
        jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0)(jnp.arange(7.0)))
        print(events.count("/jax/compilation_cache/cache_misses"), events.count("/jax/compilation_cache/cache_hits"))
    """)
    env = {**os.environ, "FHMM_PPL_CACHE": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
            for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr
    (first_folder, first_counts), (_, second_counts) = (done.stdout.split("\n")[:2] for done in runs)
    assert first_folder == str(tmp_path / "jax")
    written, _ = map(int, first_counts.split())
    assert written >= 1 and len(list((tmp_path / "jax").iterdir())) >= written
    assert second_counts.split() == ["0", str(written)]  # nothing compiled again: every kernel read back


@pytest.mark.skipif(memory_maps() is None, reason="needs Linux's /proc")
def test_compiled_programs_are_released_only_past_the_share_of_the_memory_map_cap():
    # Every compiled program holds memory maps until JAX's caches drop it; past the share of the
    # kernel's cap (vm.max_map_count) they are dropped, so that a long process never reaches the cap.
    kernels = [jax.jit(lambda x, k=k: jnp.cumsum(x) * k) for k in range(40)]
    for kernel in kernels:
        kernel(jnp.ones(5)).block_until_ready()
    held, cap = memory_maps()
    assert not release_compiled_programs_if_crowded(share=min(1.0, (held + 1000) / cap))
    assert all(kernel._cache_size() == 1 for kernel in kernels)
    assert release_compiled_programs_if_crowded(share=(held - 100) / cap)
    assert all(kernel._cache_size() == 0 for kernel in kernels)
    assert memory_maps()[0] < held - 80  # about three maps per program came back
