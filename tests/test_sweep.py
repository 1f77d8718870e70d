"""Sweeps in one process: the sweep section's schema, a failing point that does not stop the sweep,
an Optuna search with pruning on the training curve, and the one-line error without Ray."""

import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fhmm_ppl.experiment import runner
from fhmm_ppl.experiment.config import ConfigError, parse_config
from fhmm_ppl.experiment.executors import RAY_MISSING, RayExecutor
from fhmm_ppl.experiment.search import PRUNE_AFTER_TRIALS, StudyKeeper
from fhmm_ppl.experiment.sweep import run_sweep

TINY = {
    "name": "sweep",
    "data": {"source": "demo", "task": "speech_noise", "noise": "white", "test_seconds": 1.0},
    "model": {"n_states": 3},
    "training": {"max_iter": 2, "n_models": 1},
    "evaluation": {"baselines": ["irm"]},
}


@pytest.mark.parametrize("sweep, message", [
    ({"tracking.uri": ["x"]}, "cannot sweep over 'tracking.uri'"),
    ({"search": "optuna"}, "search: optuna needs sweep.space"),
    ({"executer": "ray"}, "did you mean 'sweep.executor'"),
    ({"search": "optuna", "space": {"model.n_states": {"low": 5, "high": 2}}}, "model.n_states: low (5) must be below high (2)"),
    ({"search": "optuna", "space": {"model.n_states": {"low": 0, "high": 2, "log": True}}}, "log-scale range needs low > 0"),
    ({"search": "optuna", "space": {"model.n_states": 3}}, "give a list of choices or a range"),
    ({"model.n_states": [2], "space": {"model.n_states": [2, 3]}}, "sweep.space is for search: optuna"),
    ({"address": "auto"}, "sweep.address names a Ray cluster: set executor: ray"),
    ({"model.n_states": []}, "has no values"),
])
def test_bad_sweep_sections_are_one_line_errors(sweep, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**TINY, "sweep": sweep})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_sweep_section_short_and_long_forms():
    short = parse_config({**TINY, "sweep": {"model.n_states": [2, 3], "executor": "ray", "cpus_per_task": 2}})
    assert short.sweep.grid == {"model.n_states": [2, 3]} and short.sweep.executor == "ray"
    assert [o for o, _ in short.variants()] == [{"model.n_states": 2}, {"model.n_states": 3}]
    search = parse_config({**TINY, "sweep": {"search": "optuna", "trials": 3, "space": {
        "model.n_states": {"low": 2, "high": 8, "log": True}, "model.emission": ["log_mel", "logmax"]}}})
    assert search.sweep.space["model.n_states"].integer and search.sweep.describe() == "optuna search of 3 trials"
    # validate checks the experiment at both ends of every range and at every choice
    assert [o for o, _ in search.variants()] == [{"model.n_states": 2}, {"model.n_states": 8},
                                               {"model.emission": "log_mel"}, {"model.emission": "logmax"}]
    assert not parse_config(TINY).sweep.active


def test_pruner_stops_a_trial_whose_training_curve_is_behind_the_median():
    keeper = StudyKeeper({"model.n_states": {"low": 2, "high": 8, "log": False, "step": None}}, "maximize", 0, True)
    for _ in range(PRUNE_AFTER_TRIALS):
        number, point = keeper.ask()
        assert 2 <= point["model.n_states"] <= 8 and isinstance(point["model.n_states"], int)
        assert not keeper.should_prune(number, [1.0, 2.0, 3.0])  # too few trials to compare with
        keeper.tell(number, 5.0, "complete")
    behind, _ = keeper.ask()
    assert keeper.should_prune(behind, [0.0, 0.5, 1.0])
    keeper.tell(behind, None, "pruned")
    ahead, _ = keeper.ask()
    assert not keeper.should_prune(ahead, [2.0, 3.0, 4.0])
    unpruned = StudyKeeper({"x.y": [1, 2]}, "maximize", 0, False)
    for _ in range(PRUNE_AFTER_TRIALS + 1):
        number, _ = unpruned.ask()
        assert not unpruned.should_prune(number, [0.0])
        unpruned.tell(number, 1.0, "complete")


def test_a_failing_point_does_not_stop_the_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    fit = runner.fit_separator

    prepare = runner.prepare

    def failing_prepare(config, source=None):  # a point whose check fails before its run starts
        if config.model.n_states == 5:
            raise ConfigError("data: no such file: gone.wav")
        return prepare(config, source)

    monkeypatch.setattr(runner, "prepare", failing_prepare)

    def failing_fit(train, rate, options, **kwargs):
        if options.model.n_states == 3:
            raise RuntimeError("simulated training failure")
        return fit(train, rate, options, **kwargs)

    monkeypatch.setattr(runner, "fit_separator", failing_fit)
    result = run_sweep(parse_config({**TINY, "sweep": {"model.n_states": [2, 3, 4, 5]}}))
    assert [(o["model.n_states"], r.status) for o, r in result.children] == [(2, "FINISHED"), (3, "FAILED"), (4, "FINISHED"),
                                                                             (5, "FAILED")]
    assert "simulated training failure" in result.children[1][1].error and "gone.wav" in result.children[3][1].error
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep.n_failed"] == 2
    for _, failed in (result.children[1], result.children[3]):
        run = client.get_run(failed.run_id)
        assert run.info.status == "FAILED" and run.info.end_time
    table = open(client.download_artifacts(result.run_id, "sweep.md", str(tmp_path))).read()
    assert "| 3 | - | - | - | - | - | FAILED |" in table


def test_optuna_search_runs_trials_as_nested_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = parse_config({**TINY, "sweep": {"search": "optuna", "trials": 4,
                                             "space": {"model.n_states": {"low": 2, "high": 5}}}})
    result = run_sweep(config, serve_artifacts=True)
    assert len(result.children) == 4
    client = MlflowClient(result.tracking_uri)
    for overrides, child in result.children:
        run = client.get_run(child.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == result.run_id
        assert int(run.data.params["model.n_states"]) == overrides["model.n_states"]
        pruned = run.data.tags.get("fhmm_ppl.pruned") == "true"
        assert pruned == (child.status == "PRUNED") and pruned != ("fhmm.mean.sdr_improvement" in run.data.metrics)
        assert len(client.get_metric_history(child.run_id, "train.speech.objective")) == 2
    finished = [c for _, c in result.children if c.status == "FINISHED"]
    assert len(finished) >= PRUNE_AFTER_TRIALS
    best = max(c.metrics["fhmm.mean.sdr_improvement"] for c in finished)
    assert client.get_run(result.run_id).data.metrics["best.fhmm.mean.sdr_improvement"] == pytest.approx(best)
    assert np.isfinite(best)


def test_ray_executor_without_ray_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError) as err:
        RayExecutor()
    assert str(err.value) == RAY_MISSING
