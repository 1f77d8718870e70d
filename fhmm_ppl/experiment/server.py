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


def server_command(store_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
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
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):  # not listening yet
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.25)
    raise RuntimeError(f"the MLflow server at {url} did not answer within {seconds:.0f} s")


class Server:
    """An ``mlflow server`` process over a store, started on creation; ``ready()`` waits for it.

    Starting takes seconds (the server imports MLflow and migrates a new store's tables); a sweep
    starts Ray meanwhile and calls ``ready()`` after. Until ready, the store's lock is held, so
    no other process creates the same new store's tables at once.
    """

    def __init__(self, store_uri: str, host: str = "127.0.0.1", port: Optional[int] = None) -> None:
        port = port or free_port(host)
        self.url = f"http://{host}:{port}"
        self.log_path = None
        if store_uri.startswith("sqlite:///"):
            self.log_path = Path(store_uri[len("sqlite:///"):]).resolve().parent / "server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(store_lock(store_uri))  # the server migrates a new store's tables
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(server_command(store_uri, host, port), stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        except BaseException:
            self._lock.close()
            raise
        finally:
            if self.log_path:
                log.close()

    def ready(self) -> str:
        """Wait until the server answers; its URL. Raises (naming the server's log) if it died."""
        try:
            wait_healthy(self.url, self.process)
        except RuntimeError as err:
            raise RuntimeError(f"{err} (see {self.log_path})" if self.log_path else str(err)) from None
        finally:
            self._lock.close()
        return self.url

    def stop(self) -> None:
        self._lock.close()
        _stop(self.process)


@contextlib.contextmanager
def tracking_server(store_uri: str, host: str = "127.0.0.1", port: Optional[int] = None) -> Iterator[Server]:
    """A ``Server`` over ``store_uri`` (a SQLite file or a database URI) while inside; stopped after.

    The server's own output goes to ``server.log`` beside a SQLite store (or is discarded), so that
    a failure to start can be read there.
    """
    server = Server(store_uri, host, port)
    try:
        yield server
    finally:
        server.stop()


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
