"""Writing a benchmark's table into docs/benchmarks.md, between its markers, with when and where it ran."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine() -> str:
    """One line naming the machine: CPU model, cores, OS, Python and JAX versions."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, JAX {jax.__version__} ({jax.default_backend()})")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=DOC.parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: The commit when the benchmark started (read on import: the tree may move on while it runs).
COMMIT = _commit()


def stamp(command: str) -> str:
    """``Measured <date> at commit <hash> on <machine>, by `<command>`.``"""
    return f"Measured {datetime.date.today().isoformat()} at commit {COMMIT} on {machine()}, by `{command}`."


def write(name: str, text: str, path: Path = DOC) -> Path:
    """Replace what stands between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path`` with ``text``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path}: no {begin} ... {end} markers to write between")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")
    return path
