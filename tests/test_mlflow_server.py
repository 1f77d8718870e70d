"""The MLflow tracking server and `fhmm-ppl ui`, each started as a real process by its test."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient
from test_experiment import TINY, write_yaml
from typer.testing import CliRunner

from fhmm_ppl.cli import app


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_logging_to_a_real_mlflow_server_over_http(tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        uri = f"http://127.0.0.1:{port}"
        config = write_yaml(tmp_path / "http.yaml", {**TINY, "name": "over_http", "tracking": {"uri": uri},
                                                      "evaluation": {"baselines": []}})
        result = CliRunner().invoke(app, ["run", str(config)])
        assert result.exit_code == 0, result.output
        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("over_http").experiment_id])[0]
        assert run.info.status == "FINISHED" and "fhmm.speech.sdr" in run.data.metrics
        assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_ui_serves_the_project_store(tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'ui.db'}", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "fhmm_ppl.cli", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("fhmm-ppl ui did not start")
                time.sleep(0.5)
        assert body.strip() == b"OK"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and any workers it started
        proc.wait(timeout=30)
    assert f"http://127.0.0.1:{port}" in proc.stdout.read()

