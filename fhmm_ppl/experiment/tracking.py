"""Where runs are tracked: ``MLFLOW_TRACKING_URI`` if set, else a local store under ``mlruns/``.

MLflow 3 refuses the plain file store without ``MLFLOW_ALLOW_FILE_STORE``; the
default here is SQLite at ``mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts``, so everything stays under ``mlruns/`` and ``fhmm-ppl ui``
opens the same store.

Every run is tagged with the process that runs it (``PROCESS_TAG``). A run whose process was
killed outright (SIGKILL, the out-of-memory killer) or crashed cannot end itself, so it would
stay RUNNING for good; the next run or sweep in its experiment on the same machine ends it
FAILED, with the reason (``end_orphaned_runs``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import traceback
from pathlib import Path
from typing import Iterator, Optional

import mlflow
from mlflow.tracking import MlflowClient

from fhmm_ppl.experiment.interrupts import Terminated

#: The tag naming the process that runs a run, ``host:pid``.
PROCESS_TAG = "fhmm_ppl.worker"
#: The tag naming the process's pid namespace: a container sharing the host's name has its own pids.
NAMESPACE_TAG = "fhmm_ppl.pid_namespace"


def this_process() -> str:
    """``host:pid`` of this process (``PROCESS_TAG``'s value)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``; ``""`` where ``/proc`` does not say)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def tracking_uri(explicit: Optional[str] = None) -> str:
    """The tracking URI in force: explicit, then ``MLFLOW_TRACKING_URI``, then ``sqlite:///mlruns/mlflow.db``."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    Path("mlruns").mkdir(exist_ok=True)
    return f"sqlite:///{Path('mlruns/mlflow.db').resolve()}"


def artifact_root(uri: str) -> Optional[str]:
    """Where new experiments keep artifacts for a SQLite store: ``artifacts/`` beside the database file.

    None for other stores (a tracking server decides for itself).
    """
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri[len("sqlite:///"):])
    if not database.is_absolute():
        database = database.resolve()
    return (database.parent / "artifacts").as_uri()


def local_artifacts(uri: str, artifact_uri: str) -> Optional[Path]:
    """The folder on this machine that holds ``artifact_uri`` when ``uri`` is a SQLite store whose
    artifacts a tracking server proxied (``mlflow-artifacts:/...``, kept under the store's
    ``artifacts/`` folder); None when it is not such a path or not there."""
    root = artifact_root(uri)
    if root is None or not artifact_uri.startswith("mlflow-artifacts:"):
        return None
    folder = Path(root[len("file://"):]) / artifact_uri[len("mlflow-artifacts:"):].lstrip("/")
    return folder if folder.exists() else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite store (a ``.lock`` file beside it) while inside: MLflow creates
    and migrates a new store's tables on first use, and several runs started at once on a new store
    would otherwise race through the same migrations and fail. Other stores need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri[len("sqlite:///"):]).resolve()
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, str]:
    """A client of the store at ``uri`` and the id of its experiment called ``name``, created if needed,
    both under ``store_lock`` (the client creates a new store's tables), so that runs started at once on
    a new store create the tables and the experiment once. The experiment's orphaned runs are ended
    (``end_orphaned_runs``)."""
    with store_lock(uri):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(name)
        if found is None:
            return client, client.create_experiment(name, artifact_location=artifact_root(uri))
    with contextlib.suppress(Exception):  # a best effort: never a reason for this run to fail
        end_orphaned_runs(client, found.experiment_id)
    return client, found.experiment_id


def end_orphaned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End ``FAILED`` the experiment's RUNNING runs whose process (``PROCESS_TAG``) ran on this machine,
    in this pid namespace (``NAMESPACE_TAG``), and is gone, with the reason as ``error.txt``; their
    ids. Runs of other machines or containers, of live processes (or of a new process that took the
    pid) and without the tags are left alone."""
    host, namespace = socket.gethostname(), pid_namespace()
    ended = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=10_000):
        where, _, pid = run.data.tags.get(PROCESS_TAG, "").rpartition(":")
        if (where != host or run.data.tags.get(NAMESPACE_TAG) != namespace or not pid.isdigit()
                or _alive(int(pid))):
            continue
        reason = f"the process that ran this run ({where}:{pid}) ended without ending it: killed or crashed"
        client.log_text(run.info.run_id, reason + "\n", "error.txt")
        client.set_terminated(run.info.run_id, "FAILED")
        ended.append(run.info.run_id)
    return ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


@contextlib.contextmanager
def tracked_run(**start_run) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run(**start_run)`` whose run ends ``KILLED`` when interrupted (Ctrl-C, SIGTERM) and
    ``FAILED`` on any other error, with the traceback logged as ``error.txt``; ``FINISHED`` otherwise."""
    with mlflow.start_run(**start_run) as run:
        mlflow.set_tags({PROCESS_TAG: this_process(), NAMESPACE_TAG: pid_namespace()})
        try:
            yield run
        except BaseException as err:
            with contextlib.suppress(Exception):
                mlflow.log_text(traceback.format_exc(), "error.txt")
            status = "KILLED" if isinstance(err, (KeyboardInterrupt, Terminated)) else "FAILED"
            mlflow.end_run(status)
            raise
