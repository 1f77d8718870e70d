"""Running a sweep: one parent MLflow run, one nested child run per point, on an executor.

The driver (this process) creates each child run, so that it can mark it ``KILLED`` when its
worker dies or the sweep is interrupted; the executor runs the point (``run_point``), which
carries on that run wherever it executes and returns a ``RunResult``. A point that fails does
not stop the sweep: it shows in the parent's table with its status. With the Ray executor the
runs log through an MLflow tracking server (given, or started over the store for the sweep).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import mlflow
import numpy as np
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from fhmm_ppl.experiment.config import ExperimentConfig, parse_config
from fhmm_ppl.experiment.executors import Job, RayExecutor, SequentialExecutor
from fhmm_ppl.experiment.prepare import prepare
from fhmm_ppl.experiment.runner import RunResult, run_experiment
from fhmm_ppl.experiment.search import run_search
from fhmm_ppl.experiment.server import is_server, tracking_server
from fhmm_ppl.experiment.sweep_config import HEADLINE
from fhmm_ppl.experiment.tracking import open_experiment, tracked_run, tracking_uri

FINAL = {RunStatus.to_string(s) for s in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)}


@dataclass
class SweepResult:
    """A sweep: the parent run and one ``(overrides, RunResult)`` per point, in the order they ended."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    children: list = field(default_factory=list)
    best: Optional[tuple] = None


def objective_key(config: ExperimentConfig) -> str:
    """The metric a sweep ranks its points by: ``sweep.metric``, else the task's headline metric."""
    return config.sweep.metric or HEADLINE[config.task][0][1]


def run_point(raw: dict, run_id: str, cwd: str, after_training: Optional[Callable] = None,
              progress: Optional[Callable] = None, on_status: Callable[[str], None] = lambda line: None) -> RunResult:
    """Carry on the child run ``run_id`` with the experiment ``raw`` (a plain dict, so that it travels
    to a Ray worker); returns its ``RunResult``, with status ``FAILED`` and a one-line error instead
    of raising for anything but an interrupt. ``cwd``: the driver's folder, for relative data paths."""
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    config = parse_config(raw, "sweep point")
    uri = tracking_uri(config.tracking.uri)
    try:
        return run_experiment(config, run_id=run_id, after_training=after_training, progress=progress,
                              on_status=on_status, show_training=progress is not None)
    except Exception as err:  # the run itself is marked FAILED, with the traceback as error.txt
        return RunResult(run_id, "", uri, status="FAILED", error=f"{type(err).__name__}: {err}".splitlines()[0])


class Children:
    """The driver's book of child runs: created here, run elsewhere, ended here if their worker died."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_id: str, uri: str, executor,
                 progress: Optional[Callable], on_status: Callable[[str], None], total: int) -> None:
        self.client, self.experiment_id, self.parent_id, self.uri = client, experiment_id, parent_id, uri
        self.executor, self.progress, self.on_status, self.total = executor, progress, on_status, total
        self.started: dict = {}
        self.ended: list = []
        self.count = 0

    def start(self, overrides: dict, config: ExperimentConfig, key=None, after_training=None) -> Job:
        """Create the child run for one point and the job that runs it."""
        name = ", ".join(f"{k}={v}" for k, v in overrides.items())
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent_id, "fhmm_ppl.sweep": "child"})
        run_id = run.info.run_id
        raw = config.model_dump(mode="json", exclude={"sweep"})
        raw["tracking"] = {**raw["tracking"], "uri": self.uri}
        fn = run_point
        if isinstance(self.executor, SequentialExecutor):
            fn = functools.partial(run_point, progress=self.progress, on_status=self.on_status)
        self.started[run_id] = overrides
        self.count += 1
        self.on_status(f"[{self.count}/{self.total}] {name}: run {run_id[:8]}")
        return Job(key, fn, (raw, run_id, os.getcwd(), after_training), {"overrides": overrides, "run_id": run_id})

    def finish(self, job: Job, result: Optional[RunResult], error: Optional[BaseException]) -> RunResult:
        """Record a point's outcome; a point whose worker died is marked KILLED with the reason."""
        run_id = job.info["run_id"]
        if result is None:
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            self._end(run_id, "KILLED", reason)
            result = RunResult(run_id, self.experiment_id, self.uri, status="KILLED", error=reason)
        elif result.status == "FAILED":  # failed before its run started (e.g. a data file gone): end it here
            self._end(run_id, "FAILED", result.error)
        self.started.pop(run_id, None)
        self.ended.append((job.info["overrides"], result))
        note = f" ({result.error})" if result.error else ""
        self.on_status(f"{', '.join(f'{k}={v}' for k, v in job.info['overrides'].items())}: {result.status}{note}")
        return result

    def abandon(self, reason: str) -> None:
        """Mark every child still running KILLED (the sweep was interrupted)."""
        for run_id in list(self.started):
            self._end(run_id, "KILLED", reason)

    def _end(self, run_id: str, status: str, reason: str) -> None:
        with contextlib.suppress(Exception):
            if self.client.get_run(run_id).info.status not in FINAL:
                self.client.log_text(run_id, reason + "\n", "error.txt")
                self.client.set_terminated(run_id, status)


def sweep_table(children: list, task: str = "separation") -> str:
    """A Markdown table of every point's headline metrics and status."""
    keys = list(dict.fromkeys(k for overrides, _ in children for k in overrides))
    columns = HEADLINE[task]
    digits = 3 if task == "classification" else 2
    lines = ["| " + " | ".join(keys + [c for c, _ in columns] + ["status", "run"]) + " |",
             "|" + "---|" * (len(keys) + len(columns) + 2)]
    for overrides, result in children:
        cells = [str(overrides.get(k, "")) for k in keys]
        cells += [f"{result.metrics[m]:.{digits}f}" if m in result.metrics else "-" for _, m in columns]
        lines.append("| " + " | ".join(cells + [result.status, result.run_id[:8] or "-"]) + " |")
    return "\n".join(lines)


def load_worker() -> int:
    """Nothing but loading this module (and so JAX, MLflow, the runner) in a Ray worker; its pid."""
    return os.getpid()


def make_executor(config: ExperimentConfig):
    """The executor ``sweep.executor`` names."""
    sweep = config.sweep
    if sweep.executor == "ray":
        return RayExecutor(sweep.address, sweep.cpus_per_task, warm_up=load_worker)
    return SequentialExecutor()


def run_sweep(config: ExperimentConfig, *, progress: Optional[Callable] = None,
              on_status: Callable[[str], None] = lambda message: None, serve_artifacts: bool = False,
              executor=None) -> SweepResult:
    """Run every point of ``config.sweep`` (a grid or a search) as a nested child of one parent run.

    Args:
        config: a validated experiment with an active ``sweep``.
        progress, on_status: as for ``run_experiment`` (progress bars only for the sequential executor).
        serve_artifacts: log through an MLflow server started over the store for the sweep (always
            done for a Ray sweep whose tracking URI is a store rather than a server).
        executor: overrides ``sweep.executor`` (tests, benchmarks).

    Returns:
        ``SweepResult``; the parent run holds the table (``sweep.md``), the best point's metric
        (``best.<metric>``) and overrides (params ``best.<key>``). An interrupt marks the parent and
        every running child ``KILLED`` and propagates.
    """
    variants = config.variants() if config.sweep.search == "grid" else []
    for _, variant in variants:  # every point validated and prepared before anything runs
        prepare(variant)
    executor = executor or make_executor(config)
    store = uri = tracking_uri(config.tracking.uri)
    with contextlib.ExitStack() as stack:
        server = None
        if not is_server(uri) and (serve_artifacts or isinstance(executor, RayExecutor)):
            server = stack.enter_context(tracking_server(store))
        stack.enter_context(executor)  # Ray starts while the server does
        if server is not None:
            uri = server.ready()
            on_status(f"MLflow tracking server for the sweep at {uri} (store {store})")
        mlflow.set_tracking_uri(uri)
        client, exp_id = open_experiment(uri, config.tracking.experiment or config.name)
        with tracked_run(experiment_id=exp_id, run_name=config.tracking.run_name or f"{config.name} sweep") as parent:
            on_status(f"sweep: {config.sweep.describe()}; parent run {parent.info.run_id}")
            mlflow.set_tags({"fhmm_ppl.sweep": "parent", "fhmm_ppl.task": config.task})
            mlflow.log_params({"sweep.executor": config.sweep.executor, "sweep.search": config.sweep.search,
                               **{f"sweep.{k}": json.dumps(v) for k, v in config.sweep.grid.items()},
                               **{f"sweep.space.{k}": json.dumps(v if isinstance(v, list) else v.model_dump())
                                  for k, v in config.sweep.space.items()}})
            result = SweepResult(parent.info.run_id, exp_id, store)  # the store outlives the sweep's server
            total = config.sweep.trials if config.sweep.search == "optuna" else len(variants)
            book = Children(client, exp_id, parent.info.run_id, uri, executor, progress, on_status, total)
            try:
                if config.sweep.search == "optuna":
                    run_search(config, executor, book, objective_key(config))
                else:
                    points = iter(variants)

                    def next_point() -> Optional[Job]:
                        point = next(points, None)
                        return None if point is None else book.start(*point)

                    executor.drive(next_point, book.finish)
            except BaseException:
                book.abandon("the sweep was interrupted")
                raise
            finally:
                result.children = list(book.ended)
            _log_summary(config, result)
        mlflow.set_tracking_uri(store)  # the sweep's server is about to stop
    return result


def _log_summary(config: ExperimentConfig, result: SweepResult) -> None:
    """The parent's table, and the best finished point's metric and overrides."""
    mlflow.log_text(sweep_table(result.children, config.task), "sweep.md")
    key = objective_key(config)
    sign = 1.0 if config.sweep.direction == "maximize" else -1.0
    finished = [c for c in result.children if c[1].status == "FINISHED" and np.isfinite(c[1].metrics.get(key, np.nan))]
    counts = collections.Counter(child.status for _, child in result.children)
    mlflow.log_metrics({f"sweep.n_{status.lower()}": n for status, n in counts.items()})
    if not finished:
        return
    overrides, best = max(finished, key=lambda child: sign * child[1].metrics[key])
    result.best = (overrides, best)
    mlflow.log_metric(f"best.{key}", float(best.metrics[key]))
    mlflow.log_params({f"best.{k}": v for k, v in overrides.items()})
    mlflow.set_tags({"fhmm_ppl.best": ", ".join(f"{k}={v}" for k, v in overrides.items()),
                     "fhmm_ppl.best_run": best.run_id})
