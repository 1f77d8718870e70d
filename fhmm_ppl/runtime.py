"""Process-wide runtime settings: JAX's persistent compilation cache, shape buckets, and the helper thread.

Compiling costs seconds per run: training and separating compile dozens of
kernels, most in well under a second each. A user cache folder
keeps every compiled kernel between runs, so the second run of an experiment
starts fast; and frame counts padded up to a few sizes (``frame_bucket``) let a
recording of a new length reuse the kernels compiled for another one.

Sequential JAX computations (scans, loops over small chunks) run on one core on
XLA-CPU; where two independent ones exist (a smoother's forward and backward
passes, two halves of a batch of frames) ``run_beside`` runs the second on a
helper thread while the caller runs the first (JAX releases the GIL while a computation runs).
Where several independent pipelines exist (an ensemble's model sets), ``run_each`` runs them
on threads of their own, each pipeline's inner work in turn. NumPy's own BLAS threads would
compete with XLA's for the cores (``numpy_blas_on_one_thread``), so separating keeps them to one.
Every compiled program holds a few of the process's memory maps, which the kernel caps;
``release_compiled_programs_if_crowded`` drops JAX's compiled programs before a long process
(a sweep, a loop over model sizes) reaches the cap.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, TypeVar

import jax
import numpy as np
from threadpoolctl import ThreadpoolController

A = TypeVar("A")
B = TypeVar("B")

_HELPER: ThreadPoolExecutor | None = None
_WORKERS: ThreadPoolExecutor | None = None
_HELPER_LOCK = threading.Lock()
#: Threads of ``run_each``: more than the cores, so that uneven pipelines keep every core busy.
EACH_THREADS = 4
_THREAD = threading.local()


def _mark_helper() -> None:
    _THREAD.is_helper = True


#: Set to "1" in a process that should compute on one thread (a sweep point given one CPU beside others).
ONE_THREAD = "FHMM_PPL_ONE_THREAD"
#: XLA's flags for one compute thread on the CPU.
ONE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def one_thread_env() -> dict[str, str]:
    """Environment variables for a new process that should compute on one thread: no helper thread
    (``run_beside`` runs its two computations in turn) and XLA single-threaded. A sweep's Ray workers
    with one CPU each get them, so that two points on two cores do not fight over four threads."""
    flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), ONE_THREAD_XLA_FLAGS) if f)
    return {ONE_THREAD: "1", "XLA_FLAGS": flags, "OMP_NUM_THREADS": "1"}


def _helper_thread() -> ThreadPoolExecutor:
    """The process's one-worker executor for a second computation beside the caller's."""
    global _HELPER
    with _HELPER_LOCK:
        if _HELPER is None:
            _HELPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fhmm-helper", initializer=_mark_helper)
        return _HELPER


def _in_turn() -> bool:
    """Whether work handed on from this thread runs in turn here: in a helper thread (its pool would
    otherwise wait for itself) or a one-thread process."""
    return getattr(_THREAD, "is_helper", False) or os.environ.get(ONE_THREAD) == "1"


def run_beside(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """``(first(), second())``, ``second`` running on the helper thread while this thread runs
    ``first``. Called from the helper thread itself (work handed to it that hands work on), both
    run here one after the other: its one worker would otherwise wait for itself.

    Each callable should block until its result is ready (``jax.block_until_ready``), so the
    two computations really overlap.
    """
    if _in_turn():
        return first(), second()
    pending = _helper_thread().submit(second)
    return first(), pending.result()


def run_each(function: Callable[[A], B], items) -> list[B]:
    """``[function(item) for item in items]``, the items on ``EACH_THREADS`` threads at once: for
    independent pipelines of sequential computations, such as an ensemble's model sets, which
    together keep both cores busy where each alone leaves one idle (measured in
    docs/benchmarks.md). ``run_beside`` inside ``function`` runs its two computations in turn.
    One item, a helper thread or a one-thread process: all in turn on this thread. Each call of
    ``function`` should block until its result is ready."""
    items = list(items)
    if len(items) < 2 or _in_turn():
        return [function(item) for item in items]
    global _WORKERS
    with _HELPER_LOCK:
        if _WORKERS is None:
            _WORKERS = ThreadPoolExecutor(max_workers=EACH_THREADS, thread_name_prefix="fhmm-each",
                                          initializer=_mark_helper)
        workers = _WORKERS
    return [pending.result() for pending in [workers.submit(function, item) for item in items]]


def _forget_helper_after_fork() -> None:
    # A forked child inherits the executors but not their threads: work submitted there would wait forever.
    global _HELPER, _WORKERS, _HELPER_LOCK
    _HELPER, _WORKERS, _HELPER_LOCK = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_helper_after_fork)


_BLAS_STATE: dict = {"depth": 0, "limit": None, "controller": None}


@contextmanager
def numpy_blas_on_one_thread() -> Iterator[None]:
    """NumPy's and SciPy's BLAS (OpenBLAS, MKL) on one thread inside the block, as they were after;
    also a decorator. XLA computes on every core, and after each NumPy product OpenBLAS's idle
    threads spin-wait for more work, taking cores from XLA's (measured in docs/benchmarks.md: a
    separation 10-15 % slower with them, its refinement a quarter). Blocks may nest. Only blocks
    on the main thread set the limit (elsewhere the block does nothing): recent OpenBLAS keeps a
    limit set on another thread to that thread, so a limit set on one thread and lifted on
    another would not come back as it was (``threadpoolctl`` finds the BLAS libraries)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _BLAS_STATE["depth"] == 0:
        if _BLAS_STATE["controller"] is None:
            _BLAS_STATE["controller"] = ThreadpoolController()
        _BLAS_STATE["limit"] = _BLAS_STATE["controller"].limit(limits=1, user_api="blas")
    _BLAS_STATE["depth"] += 1
    try:
        yield
    finally:
        _BLAS_STATE["depth"] -= 1
        if _BLAS_STATE["depth"] == 0:
            _BLAS_STATE["limit"].restore_original_limits()
            _BLAS_STATE["limit"] = None


#: The share of the kernel's cap on a process's memory maps past which
#: ``release_compiled_programs_if_crowded`` drops JAX's compiled programs.
MEMORY_MAP_SHARE = 0.5


def memory_maps() -> Optional[tuple[int, int]]:
    """``(maps this process holds, the kernel's cap vm.max_map_count)``; None where ``/proc`` does not
    say (not Linux)."""
    try:
        with open("/proc/self/maps", "rb") as maps, open("/proc/sys/vm/max_map_count") as cap:
            return maps.read().count(b"\n"), int(cap.read())
    except (OSError, ValueError):
        return None


def release_compiled_programs_if_crowded(share: Optional[float] = None) -> bool:
    """``jax.clear_caches()`` when this process holds more than ``share`` (default
    ``MEMORY_MAP_SHARE``) of the memory maps the kernel allows it; True if it did. Programs compile
    again when next called (from the persistent cache where it is on).

    Why: each program XLA-CPU compiles keeps about three memory maps until JAX's caches drop it, and
    Linux caps a process at ``vm.max_map_count`` (65530 by default). A process that compiles new
    shapes for long enough (a sequential sweep over model sizes, a Ray worker's many points, a loop
    over separators in a notebook, this project's test suite: about 64 000 maps by its end) reaches
    the cap, and the next compilation's failed allocation ("LLVM compilation error: Cannot allocate
    memory") crashes the process with a segmentation fault. Training and each experiment call this
    first; a check reads ``/proc/self/maps`` (milliseconds)."""
    counts = memory_maps()
    share = MEMORY_MAP_SHARE if share is None else share
    if counts is None or counts[0] <= share * counts[1]:
        return False
    jax.clear_caches()
    logging.getLogger(__name__).info("released JAX's compiled programs: this process held %d of %d memory maps", *counts)
    return True


def cache_dir() -> Path:
    """``$FHMM_PPL_CACHE`` or ``$XDG_CACHE_HOME/fhmm-ppl`` (default ``~/.cache/fhmm-ppl``)."""
    explicit = os.environ.get("FHMM_PPL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fhmm-ppl"


def enable_compilation_cache(min_compile_seconds: float = 0.0) -> Path:
    """Turn on JAX's persistent compilation cache under ``cache_dir() / 'jax'``; returns the folder.

    Every kernel is kept, however quickly it compiled and however small it is: JAX's default
    thresholds (1 s, and a size floor a file system may set) leave out most of ours, whose
    compile times, a tenth of a second or so each, add up to seconds in every process.
    """
    folder = cache_dir() / "jax"
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor, and none set later
    return folder


#: The sizes frame counts are padded up to (``frame_bucket``): ``m * 2**e`` frames for ``m`` in
#: this tuple, from ``MIN_FRAME_BUCKET`` up (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, ...).
#: Every kernel whose shapes follow a recording's length compiles once per size, not once per
#: length. Four sizes per doubling keep each size at most 1.25 times the one below, so at most
#: 20 % of a padded sequence is padding (about 10 % on average) while 10**5 frames (400 s at hop
#: 256 and 16 kHz) need only about 40 sizes; and every size is a multiple of 16, the frame chunks
#: of the mask kernels.
FRAME_BUCKET_STEPS = (4, 5, 6, 7)
#: The smallest padded frame count (a second of audio at hop 256 and 16 kHz).
MIN_FRAME_BUCKET = 64


def frame_bucket(n_frames: int) -> int:
    """The smallest ``FRAME_BUCKET_STEPS`` size ``>= n_frames`` (at least ``MIN_FRAME_BUCKET``)."""
    n_frames = max(int(n_frames), MIN_FRAME_BUCKET)
    exponent = max(0, n_frames.bit_length() - 3)  # m * 2**exponent with m in 4..7 brackets n_frames
    while True:
        for m in FRAME_BUCKET_STEPS:
            if m << exponent >= n_frames:
                return m << exponent
        exponent += 1


def padded(rows: np.ndarray, n_frames: Optional[int] = None) -> np.ndarray:
    """``rows (T, ...)`` with zero rows appended up to ``frame_bucket(n_frames)`` rows (``n_frames >=
    T``, default ``T``): what every kernel whose shapes follow a recording's length is given (its
    callers mask or drop the padding). ``n_frames``: the recording's frames where ``rows`` are
    fewer, so that the kernel compiles for the recording's bucket."""
    extra = frame_bucket(rows.shape[0] if n_frames is None else n_frames) - rows.shape[0]
    return np.pad(rows, [(0, extra)] + [(0, 0)] * (rows.ndim - 1))


def configure_numba_cache() -> Path:
    """Point numba's on-disk cache (librosa's compiled kernels) at ``cache_dir() / 'numba'``.

    librosa's numba functions take seconds to compile on first use; with a
    persistent cache folder later runs load them instead. Must run before
    librosa is first imported to take effect; a user's own setting wins.
    """
    folder = cache_dir() / "numba"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))
    return folder
