"""Sweeps on Ray: points as Ray tasks on a local 2-CPU cluster, logging to a real MLflow server.
Every sweep runs from a CLI subprocess, so that Ray never loads into the test process (conftest's
``ray_address``).

One worker is killed mid-run: its child run ends KILLED with the reason, every other point
finishes, and the parent's table says so. An Optuna search runs on the same cluster from the CLI.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from fhmm_ppl.experiment.server import tracking_server

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")

TINY = {
    "name": "ray_sweep",
    "data": {"source": "demo", "task": "speech_noise", "noise": "white", "test_seconds": 1.0},
    "model": {"n_states": 3},
    "training": {"max_iter": 2, "n_models": 1},
    "evaluation": {"baselines": ["irm"]},
}


def kill_first_running_child(uri: str, killed: dict, stop: threading.Event) -> None:
    """Poll the server; SIGKILL the worker of the first child run seen running (its pid is a run tag)."""
    client = MlflowClient(uri)
    while not stop.is_set():
        experiment = client.get_experiment_by_name("ray_sweep")
        if experiment is not None:
            for run in client.search_runs([experiment.experiment_id], "tags.fhmm_ppl.sweep = 'child'"):
                worker = run.data.tags.get("fhmm_ppl.worker")
                if run.info.status == "RUNNING" and worker:
                    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
                    killed["run_id"] = run.info.run_id
                    return
        time.sleep(0.2)


def test_ray_sweep_logs_through_a_server_and_survives_a_killed_worker(tmp_path, ray_address):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**TINY, "sweep": {"model.n_states": [2, 3, 4], "executor": "ray"}}))
    with tracking_server(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}") as server:
        uri = server.ready()
        killed, stop = {}, threading.Event()
        killer = threading.Thread(target=kill_first_running_child, args=(uri, killed, stop), daemon=True)
        killer.start()
        try:
            out = subprocess.run([sys.executable, "-m", "fhmm_ppl.cli", "sweep", str(path), "--address", ray_address,
                                  "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        finally:
            stop.set()
            killer.join(timeout=5)
        assert out.returncode == 0, out.stderr[-3000:]
        client = MlflowClient(uri)
        assert killed, "no child run was seen running"
        runs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("ray_sweep").experiment_id])}
        parent = next(r for r in runs.values() if r.data.tags.get("fhmm_ppl.sweep") == "parent")
        children = {i: r for i, r in runs.items() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert len(children) == 3
        assert children.pop(killed["run_id"]).info.status in ("KILLED", "FAILED")
        assert runs[killed["run_id"]].info.end_time
        assert "error.txt" in [a.path for a in client.list_artifacts(killed["run_id"])]
        for run_id, run in children.items():  # every metric and artifact of the finished points came through the server
            assert run.info.status == "FINISHED"
            assert "fhmm.mean.sdr_improvement" in run.data.metrics
            assert len(client.get_metric_history(run_id, "train.speech.objective")) == 2
            assert {"model", "plots", "audio"} <= {a.path for a in client.list_artifacts(run_id)}
        assert parent.info.status == "FINISHED"
        table = client.download_artifacts(parent.info.run_id, "sweep.md", str(tmp_path))
        rows = [line for line in open(table).read().splitlines() if line.startswith("| ") and "status" not in line]
        assert sorted(row.split("|")[-3].strip() for row in rows) == sorted(["FINISHED"] * 2 + [runs[killed["run_id"]].info.status])
        assert parent.data.metrics["sweep.n_finished"] == 2
        assert "best.fhmm.mean.sdr_improvement" in parent.data.metrics


def test_optuna_search_on_ray_from_the_cli(tmp_path):
    """Without ``--address`` the sweep starts a local cluster of its own, even where a ``ray
    start`` left the address of a cluster that is gone (which ``ray.init()`` would try to join)."""
    experiment = {**TINY, "name": "ray_search",
                  "sweep": {"search": "optuna", "space": {"model.n_states": {"low": 2, "high": 6},
                                                          "inference.likelihood_scale": {"low": 0.25, "high": 1.0, "log": True}}}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(experiment))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    # RAY_TMPDIR: where Ray looks for the last `ray start`'s address (short: Ray's sockets live there too)
    stale = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    (stale / "ray").mkdir()
    (stale / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(stale)}
    try:
        out = subprocess.run([sys.executable, "-m", "fhmm_ppl.cli", "sweep", str(path), "--trials", "2", "--executor",
                              "ray", "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                             env=env)
    finally:
        shutil.rmtree(stale, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "optuna search of 2 trials on ray" in out.stdout and "MLflow tracking server for the sweep" in out.stdout
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ray_search").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("fhmm_ppl.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    for child in children:  # each trial's drawn point is in its params, inside the ranges
        assert 2 <= int(child.data.params["model.n_states"]) <= 6
        assert 0.25 <= float(child.data.params["inference.likelihood_scale"]) <= 1.0
    best = max((c for c in children if "fhmm.mean.sdr_improvement" in c.data.metrics),
               key=lambda c: c.data.metrics["fhmm.mean.sdr_improvement"])
    assert parent.data.metrics["best.fhmm.mean.sdr_improvement"] == best.data.metrics["fhmm.mean.sdr_improvement"]
    assert parent.data.params["best.model.n_states"] == best.data.params["model.n_states"]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143)])  # SIGINT takes the same path: test_signals.py
def test_a_signal_ends_a_ray_sweep_parent_and_running_children_killed(tmp_path, ray_address, signum, code):
    long = {**TINY, "name": "ray_long", "model": {"n_states": 32}, "training": {"max_iter": 300, "n_models": 3},
            "sweep": {"model.n_states": [32, 33, 34], "executor": "ray", "address": ray_address}}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(long))
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    process = subprocess.Popen([sys.executable, "-m", "fhmm_ppl.cli", "run", str(path)], cwd=tmp_path,
                               env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    for line in process.stdout:  # both slots busy: two children created and handed to Ray
        if line.startswith("[2/3]"):
            break
    time.sleep(4)  # the workers are inside their runs
    started = time.monotonic()
    process.send_signal(signum)
    assert process.wait(timeout=60) == code, process.stderr.read()[-2000:]
    assert time.monotonic() - started < 30
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ray_long").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("fhmm_ppl.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "KILLED" and parent.info.end_time
    assert len(children) == 2 and all(c.info.status == "KILLED" and c.info.end_time for c in children)


def test_ray_stays_out_of_the_test_process(ray_address):
    assert sys.modules.get("ray") is None  # the sweeps above ran Ray in subprocesses only
