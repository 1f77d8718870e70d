"""The trained separator as an MLflow pyfunc model.

``mlflow.pyfunc.load_model("runs:/<run id>/separator").predict(mixture)`` takes
a mono waveform ``(n_samples,)`` at the separator's sample rate (or a list of
them) and returns ``{source: (n_samples,)}`` (or a list of such dicts).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import mlflow.pyfunc
import numpy as np

import fhmm_ppl
from fhmm_ppl.separation import load

ARTIFACT_KEY = "separator"


class SeparatorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``fhmm_ppl.separation.Separator``."""

    # MLflow advises type hints on ``predict`` when a subclass is defined (a coloured UserWarning on every
    # run, which a warnings filter around the class did not hide). Hints would switch on its input
    # validation, which a list of waveforms of different lengths fails; this is the attribute MLflow
    # itself checks to skip both.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.separator = load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, (list, tuple)):
            return [self.separator.separate(np.asarray(x, np.float32)) for x in model_input]
        return self.separator.separate(np.asarray(model_input, np.float32).reshape(-1))


def log_separator_model(folder: Path, name: str = "separator") -> str:
    """Log a saved separator folder as a pyfunc model of the active run; returns its model URI."""
    with _quiet_mlflow():
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=SeparatorModel(),
            artifacts={ARTIFACT_KEY: str(folder)},
            pip_requirements=[f"fhmm-ppl=={fhmm_ppl.__version__}"],
        )
    return info.model_uri


@contextlib.contextmanager
def _quiet_mlflow():
    """Silence what MLflow prints on every model it logs and that says nothing about this run: advice on
    CloudPickle, an unresolved pip version, a progress bar over two small files."""
    loggers = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.utils.environment", "mlflow.models.model")]
    levels = [logger.level for logger in loggers]
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous
