"""What every run records about where it came from: code and library versions, the JAX device, the data.

Kept apart from ``tracking`` (where runs are stored), which the quick commands (``compare``,
``ui``) import without loading JAX.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import jax
import mlflow
import numpy as np
import numpyro

import fhmm_ppl


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(fingerprint: str) -> dict[str, str]:
    """The tags every run carries: code and library versions, the JAX device, the data fingerprint."""
    return {
        "git_commit": _git_commit(),
        "fhmm_ppl_version": fhmm_ppl.__version__,
        "jax_version": jax.__version__,
        "numpyro_version": numpyro.__version__,
        "mlflow_version": mlflow.__version__,
        "numpy_version": np.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device": str(jax.devices()[0]),
        "data_fingerprint": fingerprint,
    }
