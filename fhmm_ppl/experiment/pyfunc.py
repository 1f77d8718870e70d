"""The trained separator as an MLflow pyfunc model, and finding a saved separator from a run id or URI.

``mlflow.pyfunc.load_model("runs:/<run id>/separator").predict(mixture)`` takes
a mono waveform ``(n_samples,)`` at the separator's sample rate (or a list of
them) and returns ``{source: (n_samples,)}`` (or a list of such dicts).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.tracking import MlflowClient

import fhmm_ppl
from fhmm_ppl.experiment.tracking import local_artifacts, tracking_uri
from fhmm_ppl.separation import load
from fhmm_ppl.separation.storage import saved_folder

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


def separator_folder(model: str) -> Path:
    """A separator folder from a path, a run id, a ``runs:/`` or ``models:/`` URI.

    For a run id the run's logged MLflow pyfunc model is used (the same model
    ``mlflow.pyfunc.load_model`` serves), falling back to its ``model/`` folder.
    """
    if Path(model).is_dir():
        return saved_folder(model)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    candidates = [model] if model.startswith(("runs:/", "models:/")) else []
    if not candidates:
        client = MlflowClient(uri)
        model = full_run_id(client, model)
        try:
            run = client.get_run(model)
        except Exception:
            run = None
        # a run logged through a sweep's tracking server: its artifacts are in the store's folder
        proxied = local_artifacts(uri, run.info.artifact_uri) if run else None
        if proxied is not None and (proxied / "model" / "separator.json").exists():
            return proxied / "model"
        tag = run.data.tags.get("fhmm_ppl.model_uri") if run else None
        candidates = [c for c in (tag, f"runs:/{model}/model") if c]
    errors = []
    for candidate in candidates:
        try:
            local = Path(mlflow.artifacts.download_artifacts(candidate))
        except Exception as err:
            errors.append(f"{candidate}: {err}")
            continue
        try:
            return saved_folder(local)
        except ValueError:
            errors.append(f"{candidate}: no separator inside")
    raise ValueError(f"{model}: not a separator folder, and MLflow could not fetch it ({'; '.join(errors)})")


def full_run_id(client, run_id: str) -> str:
    """The run id that the short id ``fhmm-ppl compare`` prints (its first 8 characters) stands for."""
    if len(run_id) >= 32 or not run_id or any(c not in "0123456789abcdef" for c in run_id):
        return run_id
    ids = [e.experiment_id for e in client.search_experiments()]
    matches = [r.info.run_id for r in client.search_runs(ids, max_results=50000) if r.info.run_id.startswith(run_id)]
    if len(matches) > 1:
        raise ValueError(f"run id {run_id!r} is ambiguous: {', '.join(m[:12] for m in matches[:5])}...; give more characters")
    return matches[0] if matches else run_id
