"""Search beyond grids: Optuna's TPE sampler draws each trial's point from ``sweep.space``.

The study lives in one ``StudyKeeper`` that the executor hosts (the object itself when
sequential, a Ray actor otherwise), so the driver's ask/tell and the workers' pruning reports
reach the same study from any process or machine. Each trial is a nested child run like a grid
point. Pruning is on the training objective: after training, a trial reports its training curve
(the mean per-frame objective per iteration) and Optuna's median pruner stops it before
separation and scoring when that curve is behind the median of earlier trials at the same
iteration. (Optuna's own MLflow callback opens a run per trial itself; here the runs are the
sweep's children, so it is not used.)
"""

from __future__ import annotations

from typing import Any, Optional

import optuna

from fhmm_ppl.experiment.config import ConfigError, ExperimentConfig
from fhmm_ppl.experiment.executors import Job
from fhmm_ppl.experiment.runner import RunResult
from fhmm_ppl.experiment.sweep_config import SearchRange

#: Trials that complete before the pruner may stop one (fewer would prune on one curve's noise).
PRUNE_AFTER_TRIALS = 2


class StudyKeeper:
    """One Optuna study, driven by ask/tell, with pruning reports from the trials.

    Args:
        space: ``{dotted key: [choices] or a SearchRange}`` (``SweepConfig.space``; ranges may be given
            as their ``{low, high, log, step}`` mappings).
        direction: ``maximize`` or ``minimize`` the sweep's metric.
        seed: the sampler's seed (the experiment's), so a search is repeatable.
        prune: whether trials may be pruned.
    """

    def __init__(self, space: dict, direction: str, seed: int, prune: bool) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = {key: entry if isinstance(entry, list) else SearchRange.model_validate(entry)
                      for key, entry in space.items()}
        self.direction = direction
        self.prune_on = prune
        pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS) if prune else optuna.pruners.NopPruner()
        self.study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
        self.trials: dict[int, optuna.trial.Trial] = {}

    def ask(self) -> tuple[int, dict]:
        """A new trial's number and its point ``{dotted key: value}``."""
        trial = self.study.ask()
        self.trials[trial.number] = trial
        point = {}
        for key, entry in self.space.items():
            if isinstance(entry, list):
                point[key] = trial.suggest_categorical(key, entry)
            elif entry.integer:
                point[key] = trial.suggest_int(key, entry.low, entry.high, log=entry.log, step=entry.step or 1)
            else:
                point[key] = trial.suggest_float(key, entry.low, entry.high, log=entry.log, step=entry.step)
        return trial.number, point

    def should_prune(self, number: int, curve: list) -> bool:
        """Report a trial's training curve (higher is better); whether to stop it now."""
        trial = self.trials[number]
        sign = 1.0 if self.direction == "maximize" else -1.0  # the pruner reads values in the study's direction
        for step, value in enumerate(curve):
            trial.report(sign * float(value), step)
        return self.prune_on and bool(curve) and trial.should_prune()

    def tell(self, number: int, value: Optional[float], state: str) -> None:
        """End a trial: ``complete`` with its value, ``pruned`` or ``fail``."""
        states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
                  "fail": optuna.trial.TrialState.FAIL}
        self.study.tell(number, value if state == "complete" else None, state=states[state])
        self.trials.pop(number, None)


class PruneGate:
    """``gate(curve) -> bool``: a trial's question to the study, from whichever process runs it."""

    def __init__(self, keeper: Any, number: int, remote: bool) -> None:
        self.keeper, self.number, self.remote = keeper, number, remote

    def __call__(self, curve) -> bool:
        curve = [float(v) for v in curve]
        if self.remote:
            import ray  # only ever remote on a Ray worker

            return ray.get(self.keeper.should_prune.remote(self.number, curve))
        return self.keeper.should_prune(self.number, curve)


def run_search(config: ExperimentConfig, executor, book, key: str) -> None:
    """Run ``sweep.trials`` trials of an Optuna search on ``executor``, each recorded in ``book`` (the
    sweep's ``Children``), valued by the metric ``key``."""
    sweep = config.sweep
    keeper = executor.host(StudyKeeper, dict(sweep.space), sweep.direction, config.seed, sweep.prune)
    remote = executor.name != "sequential"
    asked = 0

    def next_job() -> Optional[Job]:
        nonlocal asked
        while asked < sweep.trials:
            asked += 1
            number, point = executor.call(keeper, "ask")
            try:
                trial_config = config.point(point)
            except ConfigError as err:  # a drawn combination the schema refuses: a failed trial, no run
                executor.call(keeper, "tell", number, None, "fail")
                book.ended.append((point, RunResult("", book.experiment_id, book.uri, status="FAILED", error=str(err))))
                book.on_status(f"trial {number}: {err}")
                continue
            return book.start(point, trial_config, key=number, after_training=PruneGate(keeper, number, remote))
        return None

    def on_done(job: Job, result: Optional[RunResult], error: Optional[BaseException]) -> None:
        result = book.finish(job, result, error)
        value = result.metrics.get(key)
        if result.status == "PRUNED":
            executor.call(keeper, "tell", job.key, None, "pruned")
        elif result.status == "FINISHED" and value is not None:
            executor.call(keeper, "tell", job.key, float(value), "complete")
        else:
            executor.call(keeper, "tell", job.key, None, "fail")

    executor.drive(next_job, on_done)
