"""An MLflow tracking server over a store, for as long as a sweep runs.

With a parallel executor many processes log at once; SQLite is one file with one writer, so
they go through a server (``mlflow server``) that owns the store instead. The server also
proxies artifacts (``--serve-artifacts``) into the store's artifact folder, so a worker on
another machine needs no shared filesystem: experiments created through it keep their
artifacts under ``mlflow-artifacts:/``, resolved by the server (and by ``fhmm-ppl ui``, which
serves the same folder).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from fhmm_ppl.experiment.tracking import artifact_root, store_lock

#: How long a starting server may take to answer its health check.
START_SECONDS = 90.0


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server (``http(s)://``) rather than a store."""
    return uri.startswith(("http://", "https://"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def server_command(store_uri: str, host: str, port: int, workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line over ``store_uri``, serving artifacts from its artifact folder."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri, "--host", host,
               "--port", str(port), "--workers", str(workers), "--serve-artifacts"]
    root = artifact_root(store_uri)
    if root:
        command += ["--artifacts-destination", root]
    return command


def wait_healthy(url: str, process: Optional[subprocess.Popen] = None, seconds: float = START_SECONDS) -> None:
    """Return once ``url/health`` answers; raise with the server's output if it died or never answered."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace")[-2000:] if process.stdout else ""
            raise RuntimeError(f"the MLflow server exited with code {process.returncode}: {output.strip()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the MLflow server at {url} did not answer within {seconds:.0f} s")


@contextlib.contextmanager
def tracking_server(store_uri: str, host: str = "127.0.0.1", port: Optional[int] = None) -> Iterator[str]:
    """Start ``mlflow server`` over ``store_uri`` (a SQLite file or a database URI); yield its URL; stop it.

    The server's own output goes to ``server.log`` beside a SQLite store (or is discarded), so that
    a failure to start can be read there.
    """
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    log_path = None
    if store_uri.startswith("sqlite:///"):
        log_path = Path(store_uri[len("sqlite:///"):]).resolve().parent / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with store_lock(store_uri):  # the server migrates a new store's tables; not beside another creator
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            process = subprocess.Popen(server_command(store_uri, host, port), stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        finally:
            if log_path:
                log.close()
        try:
            wait_healthy(url, process)
        except BaseException as err:
            _stop(process)
            if isinstance(err, RuntimeError) and log_path:
                raise RuntimeError(f"{err} (see {log_path})") from None
            raise
    try:
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and its workers (its own process group), politely first."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()
