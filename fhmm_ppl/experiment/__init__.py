"""Experiments: the YAML schema, the runner and MLflow tracking."""

from fhmm_ppl.experiment.config import ConfigError, ExperimentConfig, load_config, parse_config

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "parse_config"]
