"""Where a sweep's points run: in this process one after the other, or as Ray tasks.

Both executors take jobs from a ``next_job()`` callable (so a search can draw its next trial
only when a slot frees) and hand each outcome to ``on_done(job, result, error)``. A job's
function never raises for an ordinary failure (``run_point`` returns a failed result); an
``error`` here means the job's process died (a Ray worker killed, out of memory). An interrupt
of the driver (Ctrl-C, SIGTERM) cancels what is in flight and propagates, so the caller can
mark the unfinished runs ``KILLED``.

Ray is optional (``pip install 'fhmm-ppl[ray]'``) and imported only by ``RayExecutor``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from fhmm_ppl.runtime import one_thread_env

#: The one-line error when Ray is asked for and missing.
RAY_MISSING = "the ray executor needs Ray: pip install 'fhmm-ppl[ray]'"


@dataclass
class Job:
    """One unit of work: ``fn(*args)`` run on an executor, with the caller's bookkeeping in ``key``."""

    key: Any
    fn: Callable
    args: tuple = ()
    info: dict = field(default_factory=dict)


class SequentialExecutor:
    """Runs every job here, in order; a host object is the object itself."""

    name = "sequential"
    slots = 1

    def __enter__(self) -> "SequentialExecutor":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def host(self, cls: type, *args) -> Any:
        """An object the jobs and the driver share (a search's study): here, the object itself."""
        return cls(*args)

    def call(self, hosted: Any, method: str, *args) -> Any:
        return getattr(hosted, method)(*args)

    def drive(self, next_job: Callable[[], Optional[Job]], on_done: Callable[[Job, Any, Optional[BaseException]], None]) -> None:
        while (job := next_job()) is not None:
            on_done(job, job.fn(*job.args), None)


class RayExecutor:
    """Runs each job as a Ray task with ``cpus_per_task`` CPUs, as many at once as the cluster holds.

    ``warm_up``: a function run once per slot as soon as the cluster is up, so that workers start
    and import what the jobs need while the caller prepares (e.g. a tracking server starts).
    ``address`` names an existing cluster (``ray://host:10001``, ``host:6379`` or ``auto``; default
    Ray's ``RAY_ADDRESS``); without either a local cluster is started for the sweep, with every
    CPU of this machine, and stopped after (never one a ``ray start`` on this machine left behind).
    Tasks are not retried: a point whose worker dies is reported, not run twice. A point given
    fewer than two CPUs computes on one thread (``runtime.one_thread_env``).
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, cpus_per_task: float = 1.0, poll_seconds: float = 0.5,
                 warm_up: Optional[Callable[[], Any]] = None) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError(RAY_MISSING) from None
        self._ray = ray
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.poll_seconds = poll_seconds
        self.slots = 1
        self._started = False
        self.warm_up = warm_up
        self._options: dict = dict(num_cpus=cpus_per_task, max_retries=0)
        if cpus_per_task < 2:  # one CPU: compute on one thread (no oversubscription)
            self._options["runtime_env"] = {"env_vars": one_thread_env()}

    def __enter__(self) -> "RayExecutor":
        ray = self._ray
        # Ray's core worker installs a C-level SIGTERM handler that aborts the process; put back the
        # Python ones (the CLI's, which end the runs KILLED) as Python still records them.
        handlers = ({signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
                    if threading.current_thread() is threading.main_thread() else {})
        if not ray.is_initialized():
            quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
            address = self.address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, **quiet)
            else:  # "local": a cluster of the sweep's own, even where `ray start` left an address behind
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
            self._started = True
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        if cpus < self.cpus_per_task:
            raise ValueError(f"sweep.cpus_per_task is {self.cpus_per_task}, but the Ray cluster has {cpus:g} CPUs")
        self.slots = max(1, int(cpus // self.cpus_per_task))
        if self.warm_up is not None:  # start and load the workers now, while the caller gets ready
            warm = ray.remote(**self._options)(self.warm_up)
            for _ in range(self.slots):
                warm.remote()
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._ray.shutdown()

    def host(self, cls: type, *args) -> Any:
        """``cls(*args)`` as a Ray actor, so that tasks on any node can call it."""
        return self._ray.remote(num_cpus=0)(cls).remote(*args)

    def call(self, hosted: Any, method: str, *args) -> Any:
        return self._ray.get(getattr(hosted, method).remote(*args))

    def drive(self, next_job: Callable[[], Optional[Job]], on_done: Callable[[Job, Any, Optional[BaseException]], None]) -> None:
        ray = self._ray
        in_flight: dict = {}
        remote_fns: dict = {}
        try:
            exhausted = False
            while True:
                while not exhausted and len(in_flight) < self.slots:
                    job = next_job()
                    if job is None:
                        exhausted = True
                        break
                    if job.fn not in remote_fns:
                        remote_fns[job.fn] = ray.remote(**self._options)(job.fn)
                    in_flight[remote_fns[job.fn].remote(*job.args)] = job
                if not in_flight:
                    return
                # A short timeout keeps the driver responsive to Ctrl-C and SIGTERM.
                done, _ = _interruptible(ray.wait, list(in_flight), num_returns=1, timeout=self.poll_seconds)
                for ref in done:
                    job = in_flight.pop(ref)
                    try:
                        result, error = _interruptible(ray.get, ref), None
                    except ray.exceptions.RayError as err:
                        result, error = None, err
                    on_done(job, result, error)
        except BaseException:
            for ref in in_flight:
                with contextlib.suppress(Exception):  # already finished, or its worker gone
                    ray.cancel(ref, force=True)
            raise


def _interruptible(fn: Callable, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` for Ray's Cython calls, which wrap an interrupt raised by a signal
    handler while they wait (Ctrl-C, SIGTERM) in a ``SystemError``: the interrupt is raised as itself."""
    try:
        return fn(*args, **kwargs)
    except SystemError as err:
        inner = err.__cause__ or err.__context__
        if isinstance(inner, BaseException) and not isinstance(inner, Exception):
            raise inner from None
        raise
