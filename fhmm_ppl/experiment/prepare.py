"""What an experiment needs from the disk and from user code, checked when a run starts.

Validating an experiment file reads nothing else; ``prepare`` is the step that does: it imports
the ``model.plugins`` files (so the priors they register can be named), builds every named prior
and checks it suits its role (and has a closed-form M-step under EM), and checks that every data
file, glob and dataset folder is there. The runner calls it before an MLflow run is created, and
``fhmm-ppl validate`` calls it too. Errors are one ``ConfigError`` line with the dotted key.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Optional

from fhmm_ppl.audio.mma import DOWNLOAD_HINT
from fhmm_ppl.experiment.config import ConfigError, ExperimentConfig
from fhmm_ppl.experiment.plugins import load_plugins
from fhmm_ppl.models.priors import check_prior_role, make_prior


def prepare(config: ExperimentConfig, source: Optional[str] = None) -> None:
    """Load the plug-ins and check the priors and the data of ``config``.

    Args:
        config: a validated experiment.
        source: where it came from (the file name), put before each error.

    Raises:
        ConfigError: one line naming the entry, e.g. ``data: no file matches 'x/*.wav' (train.a)``.
    """
    try:
        _check_priors(config)
        _check_data(config)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}" if source else str(err)) from None


def _check_priors(config: ExperimentConfig) -> None:
    model = config.model
    try:
        load_plugins(model.plugins)
    except ValueError as err:
        raise ValueError(f"model.plugins: {err}") from None
    covariance_type = model.covariance_type if model.emission == "gaussian" else None
    entries = [("priors", role, entry) for role, entry in model.priors.items()]
    if model.unknown:  # learnt by EM on each mixture
        entries += [("unknown_priors", role, entry) for role, entry in model.unknown_priors.items() if entry]
    for key, role, entry in entries:
        try:
            prior = make_prior(entry.name, **entry.params)
            check_prior_role(prior, role, covariance_type)
        except (ValueError, TypeError) as err:
            raise ValueError(f"model.{key}.{role}: {err}") from None
        if (config.training.method == "em" or key == "unknown_priors") and not hasattr(prior, "map_update"):
            raise ValueError(f"model.{key}.{role}: prior {entry.name!r} has no closed-form M-step, so EM "
                             "cannot honour it" + ("; use training.method: svi" if key == "priors" else ""))


def _check_data(config: ExperimentConfig) -> None:
    data = config.data
    if data.source == "mma" and not Path(data.root).is_dir():
        raise ValueError(f"data: root {data.root!r} is not a folder; {DOWNLOAD_HINT}")
    if data.source != "files":
        return
    for kind, entries in (("train", data.train), ("test_clean", data.test_clean), ("classes", data.classes)):
        for name, patterns in entries.items():
            for pattern in patterns:
                if not glob.glob(pattern):
                    raise ValueError(f"data: no file matches {pattern!r} ({kind}.{name})")
    for item in data.test:
        for path in [item.mixture, *item.references.values()]:
            if not Path(path).exists():
                raise ValueError(f"data: no such file: {path}")
