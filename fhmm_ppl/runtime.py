"""Process-wide runtime settings: JAX's persistent compilation cache.

Compiling the scans costs seconds; a user cache folder keeps compiled kernels
between runs, so the second run of an experiment starts fast.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$FHMM_PPL_CACHE`` or ``$XDG_CACHE_HOME/fhmm-ppl`` (default ``~/.cache/fhmm-ppl``)."""
    explicit = os.environ.get("FHMM_PPL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fhmm-ppl"


def enable_compilation_cache(min_compile_seconds: float = 0.5) -> Path:
    """Turn on JAX's persistent compilation cache under ``cache_dir() / 'jax'``; returns the folder."""
    import jax

    folder = cache_dir() / "jax"
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return folder


def configure_numba_cache() -> Path:
    """Point numba's on-disk cache (librosa's compiled kernels) at ``cache_dir() / 'numba'``.

    librosa's numba functions take seconds to compile on first use; with a
    persistent cache folder later runs load them instead. Must run before
    librosa is first imported to take effect; a user's own setting wins.
    """
    folder = cache_dir() / "numba"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))
    return folder
