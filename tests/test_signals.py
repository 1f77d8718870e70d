"""Runs that survive signals and concurrent writers: SIGTERM and SIGINT end runs KILLED; runs started at once on a new store all finish."""

import os
import signal
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

LONG = {
    "name": "long",
    "data": {"source": "demo", "task": "speech_noise", "noise": "white", "test_seconds": 2.0},
    "model": {"n_states": 32},
    "training": {"max_iter": 200, "n_models": 3},
    "evaluation": {"baselines": ["irm"]},
}


def start(tmp_path, command: str, config: dict):
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    # as from a terminal: a shell that started this test run in the background made it ignore SIGINT,
    # which a child would inherit (Python then installs no KeyboardInterrupt handler)
    process = subprocess.Popen([sys.executable, "-m", "fhmm_ppl.cli", command, str(path)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return process, uri


def wait_for_runs(process, count: int) -> None:
    """Read the command's output until it has announced ``count`` MLflow runs (it is then inside them)."""
    seen = 0
    for line in process.stdout:
        seen += line.startswith("MLflow run ")
        if seen >= count:
            return
    pytest.fail(f"the command ended (exit {process.wait()}) before announcing {count} runs: {process.stderr.read()[-2000:]}")


def finished_runs(uri: str):
    client = MlflowClient(uri)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_run_killed(tmp_path, signum, code):
    process, uri = start(tmp_path, "run", LONG)
    wait_for_runs(process, 1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, (process.returncode, err[-3000:])
    assert "interrupted" in err and "KILLED" in err
    client, (run,) = finished_runs(uri)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert "error.txt" in [a.path for a in client.list_artifacts(run.info.run_id)]


@pytest.mark.slow
def test_sigterm_ends_a_sweep_parent_and_its_running_child_killed(tmp_path):
    process, uri = start(tmp_path, "run", {**LONG, "sweep": {"model.n_states": [32, 33]}})
    wait_for_runs(process, 1)  # the first child (the parent announces itself as "sweep over ...")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143
    _, runs = finished_runs(uri)
    assert len(runs) == 2 and all(r.info.status == "KILLED" and r.info.end_time for r in runs)


ONE_RUN = """
import sys, mlflow
from fhmm_ppl.experiment.tracking import open_experiment
uri = sys.argv[1]
mlflow.set_tracking_uri(uri)
_, experiment = open_experiment(uri, "at once")
with mlflow.start_run(experiment_id=experiment):
    mlflow.log_metric("value", float(sys.argv[2]))
"""


@pytest.mark.slow
def test_runs_started_at_once_on_a_new_store_all_finish(tmp_path):
    """MLflow creates a new SQLite store's tables on first use; without the store lock, processes
    starting at once raced through the same migrations and most failed."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    processes = [subprocess.Popen([sys.executable, "-c", ONE_RUN, uri, str(i)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(5)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    client, runs = finished_runs(uri)
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.metrics["value"] for r in runs) == [float(i) for i in range(5)]
