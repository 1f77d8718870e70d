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


DROPPED = """
import os, signal, sys, time
from fhmm_ppl.experiment.interrupts import Terminated, signals_raise

class SendsInItsFinaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.{signal})
        for _ in range(10000):  # Python runs the handler here, where an exception is dropped
            pass

with signals_raise() if sys.argv[1] == "inside" else open(os.devnull):
    try:
        SendsInItsFinaliser()
        for _ in range(100):
            time.sleep(0.01)
    except (KeyboardInterrupt, Terminated) as err:
        sys.exit(f"raised {{type(err).__name__}}")
print("finished")
"""


@pytest.mark.parametrize("name, where, expected", [("SIGTERM", "inside", "raised Terminated"),
                                                   ("SIGINT", "inside", "raised KeyboardInterrupt"),
                                                   ("SIGINT", "outside", "finished")])
def test_a_signal_whose_exception_a_finaliser_dropped_is_raised_again(name, where, expected):
    """A signal's handler may run inside a finaliser or a garbage-collection callback (JAX's, at
    every collection), which drops its exception; a CLI run then went on and ended FINISHED. Outside
    ``signals_raise`` the exception is dropped (the control)."""
    done = subprocess.run([sys.executable, "-c", DROPPED.format(signal=name), where], capture_output=True,
                          text=True, timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert expected in done.stdout + done.stderr, done.stderr[-2000:]
    assert ("Exception ignored" in done.stderr) == (where == "outside")


IN_A_TRANSACTION = """
import os, signal, sys, time
from fhmm_ppl.experiment.interrupts import Terminated, signals_raise

STORE = "def commit():\\n    os.kill(os.getpid(), signal.SIGTERM)\\n    time.sleep(0.3)\\n    return 'committed'\\n"
scope = {"__name__": "sqlalchemy.orm.session", "os": os, "signal": signal, "time": time}
exec(STORE, scope)  # a function of the store's modules, as SQLAlchemy's own would be
with signals_raise():
    try:
        print(scope["commit"](), flush=True)
        for _ in range(100):
            time.sleep(0.01)
    except Terminated:
        sys.exit("raised after the commit")
print("finished")
"""


def test_a_signal_waits_for_the_tracking_store_transaction_then_raises():
    """SIGTERM cut a run's SQLite transaction in two, whose lock then kept the run from being marked
    KILLED; it now waits for the store's code to return."""
    done = subprocess.run([sys.executable, "-c", IN_A_TRANSACTION], capture_output=True, text=True, timeout=120)
    assert done.stdout == "committed\n" and "raised after the commit" in done.stderr, done.stderr[-2000:]


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


def test_a_run_whose_process_was_killed_outright_is_ended_failed_by_the_next(tmp_path):
    import mlflow

    from fhmm_ppl.experiment.tracking import open_experiment, tracked_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = ("import mlflow, os, signal\n"
            "from fhmm_ppl.experiment.tracking import open_experiment, tracked_run\n"
            f"_, exp = open_experiment({uri!r}, 'crash')\n"
            f"mlflow.set_tracking_uri({uri!r})\n"
            "with tracked_run(experiment_id=exp, run_name='killed'):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)  # no handler, no finally: the run cannot end itself\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    client = MlflowClient(uri)
    (orphan,) = client.search_runs([client.get_experiment_by_name("crash").experiment_id])
    assert orphan.info.status == "RUNNING"
    # the same host and pid seen from another container (pid namespace): not this machine's to judge
    elsewhere = client.create_run(orphan.info.experiment_id, tags={"fhmm_ppl.worker": orphan.data.tags["fhmm_ppl.worker"],
                                                                   "fhmm_ppl.pid_namespace": "pid:[1]"})
    mlflow.set_tracking_uri(uri)
    with tracked_run(experiment_id=orphan.info.experiment_id, run_name="alive") as alive:
        open_experiment(uri, "crash")  # what the next run or sweep does first
        assert client.get_run(orphan.info.run_id).info.status == "FAILED"
        assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # its process lives: left alone
        assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"
        note = client.download_artifacts(orphan.info.run_id, "error.txt", str(tmp_path))
        assert "ended without ending it: killed or crashed" in open(note).read()
    assert client.get_run(alive.info.run_id).info.status == "FINISHED"
