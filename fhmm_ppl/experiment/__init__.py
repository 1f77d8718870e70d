"""Experiments: the YAML schema, the runner, sweeps and MLflow tracking.

``ConfigError``, ``ExperimentConfig``, ``load_config`` and ``parse_config`` are re-exported here,
resolved on first use (PEP 562): the schema checks separation settings against the emissions,
which loads JAX, and the quick commands (``fhmm-ppl compare``, ``ui``) import this package's
``tracking`` module without needing any of that.
"""

from typing import Any

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "parse_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fhmm_ppl.experiment import config

        return getattr(config, name)
    raise AttributeError(f"module 'fhmm_ppl.experiment' has no attribute {name!r}")
