"""The trained separator as an MLflow pyfunc model.

``mlflow.pyfunc.load_model("runs:/<run id>/separator").predict(mixture)`` takes
a mono waveform ``(n_samples,)`` at the separator's sample rate (or a list of
them) and returns ``{source: (n_samples,)}`` (or a list of such dicts).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np

ARTIFACT_KEY = "separator"


class SeparatorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``fhmm_ppl.separation.Separator``."""

    def load_context(self, context) -> None:
        from fhmm_ppl.separation import load

        self.separator = load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, (list, tuple)):
            return [self.separator.separate(np.asarray(x, np.float32)) for x in model_input]
        return self.separator.separate(np.asarray(model_input, np.float32).reshape(-1))


def log_separator_model(folder: Path, name: str = "separator") -> str:
    """Log a saved separator folder as a pyfunc model of the active run; returns its model URI."""
    import fhmm_ppl

    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=SeparatorModel(),
        artifacts={ARTIFACT_KEY: str(folder)},
        pip_requirements=[f"fhmm-ppl=={fhmm_ppl.__version__}"],
    )
    return info.model_uri
