"""Saving and loading separators: ``separator.json`` (settings, sources) beside ``params.npz`` (arrays),
with the migrations of older formats.

``params.npz`` holds ``<name>/init``, ``<name>/trans`` and ``<name>/emission/<key>`` per source,
the ensemble's later model sets under ``model<i>/``. Older formats read as they separated:

- format 2 had no ensembles and no likelihood scale (one model set, scale 1);
- formats 2 and 3 kept no state power spectra for log-max models (dominance masks);
- formats 2-4 kept no state dictionaries (``state_components`` 0);
- formats 2-5 kept the options flat, with ``mask: wiener`` for soft masks and ``logmax_mask``;
- formats 2-6 had no semi-supervised separators (format 7's optional ``adaptation``: the sources
  learnt on each mixture, which an unadapted separator has no parameters for);
- formats 2-7 did not refine the trained spectra on each mixture (``inference.refine_iter`` 0).
- formats 2-8 took the noise's power in the masks frame by frame (``inference.average_seconds`` 0);
- format 9 averaged it as the power its mask gave it (``inference.average_rule`` ``share``);
- formats 8-10 refined on every frame (``inference.refine_stride`` 1);
- formats 2-12 warped no dictionaries (``inference.pitch_shifts`` 0);
- formats 2-13 gave every estimate the mixture's phase (``inference.phase_sources`` empty);
- formats 2-14 separated at the level as trained (``inference.match_level`` false);
- formats 2-15 learnt no reconstruction factors (``training.reconstruction`` false);
- formats 2-16 kept no ceilings for the noise's tracked level (``training.level_ceilings`` false).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np

from fhmm_ppl.separation.options import SeparatorOptions

FORMAT_VERSION = 17
READABLE_FORMATS = (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)


def _prefix(index: int) -> str:
    """Key prefix of an ensemble's ``index``-th model set (none for the first)."""
    return "" if index == 0 else f"model{index}/"


class SourceModel(NamedTuple):
    """One trained source HMM as saved: ``init (N,)`` and ``trans (N, N)`` probabilities, and the
    emission's arrays (``Emission.source_params``, plus ``dictionaries (N, F, R)`` where it has them)."""

    init: np.ndarray
    trans: np.ndarray
    emission: dict


def write(folder: Union[str, Path], members: list[dict[str, SourceModel]], sample_rate: int,
          options: SeparatorOptions, adaptation: Optional[dict] = None) -> Path:
    """Write ``separator.json`` and ``params.npz`` into ``folder``: the model sets ``members``
    (``{source name: SourceModel}`` each), the sample rate, the options and, for a semi-supervised
    separator, its ``adaptation`` settings (``separation.adaptation.Adaptation.to_json``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "sample_rate": int(sample_rate), "sources": list(members[0]),
            "model_sets": len(members), "options": options.model_dump(mode="json")}
    if adaptation is not None:
        meta["adaptation"] = adaptation
    (folder / "separator.json").write_text(json.dumps(meta, indent=2))
    arrays = {}
    for index, member in enumerate(members):
        for name, model in member.items():
            prefix = _prefix(index) + name
            arrays[f"{prefix}/init"], arrays[f"{prefix}/trans"] = model.init, model.trans
            arrays.update({f"{prefix}/emission/{key}": value for key, value in model.emission.items()})
    np.savez(folder / "params.npz", **arrays)
    return folder


def options_from_flat(saved: dict, version: int) -> SeparatorOptions:
    """Options of a format 2-5 folder (flat keywords), with the defaults it separated with."""
    saved = dict(saved)
    saved.setdefault("refine_iter", 0)
    saved.setdefault("average_seconds", 0.0)
    saved.setdefault("pitch_shifts", 0)
    saved.setdefault("phase_sources", [])
    saved.setdefault("match_level", False)
    saved.setdefault("reconstruction", False)
    if version == 2:
        saved.setdefault("n_models", 1)
        saved.setdefault("likelihood_scale", 1.0)
    if version < 4:
        saved.setdefault("logmax_mask", "dominance")
    if version < 5:
        saved.setdefault("state_components", 0)
    saved["mask"] = "soft" if saved.get("mask", "wiener") == "wiener" else saved["mask"]
    saved["soft_mask"] = saved.pop("logmax_mask", None)
    if saved.get("emission") == "complex_gaussian":
        saved["soft_mask"] = None  # complex-Gaussian separators made Wiener masks whatever logmax_mask said
    if saved.get("trainer") == "svi":  # SVI ran 10 steps per max_iter
        saved["svi_steps"] = 10 * int(saved.get("max_iter", 50))
    return SeparatorOptions.from_flat(**saved)


def saved_folder(folder: Union[str, Path]) -> Path:
    """The saved separator in ``folder``: the folder itself, or the first folder below it holding a
    ``separator.json`` (an MLflow model's artifacts nest it); one ``ValueError`` line if none does."""
    folder = Path(folder)
    if (folder / "separator.json").exists():
        return folder
    found = sorted(folder.rglob("separator.json"))
    if found:
        return found[0].parent
    raise ValueError(f"{folder}: not a saved separator (no separator.json inside)")


def read(folder: Union[str, Path]) -> tuple[list[dict[str, SourceModel]], int, SeparatorOptions, Optional[dict]]:
    """``(members, sample_rate, options, adaptation)`` of a folder ``write`` made (any readable
    format; ``adaptation`` None where none was saved); a missing or damaged folder is one
    ``ValueError`` line."""
    folder = Path(folder)
    meta_path = folder / "separator.json"
    if not meta_path.exists():
        raise ValueError(f"{folder}: not a saved separator (no separator.json)")
    try:
        meta = json.loads(meta_path.read_text())
        version = meta.get("format_version")
        if version not in READABLE_FORMATS:
            raise ValueError(f"separator format {version} is not supported")
        if 6 <= version < 8:
            meta["options"].setdefault("inference", {}).setdefault("refine_iter", 0)
        if 6 <= version < 9:
            meta["options"].setdefault("inference", {}).setdefault("average_seconds", 0.0)
        if 6 <= version < 10:
            meta["options"].setdefault("inference", {}).setdefault("average_rule", "share")
        if 6 <= version < 11:
            meta["options"].setdefault("inference", {}).setdefault("refine_stride", 1)
        if 6 <= version < 13:
            meta["options"].setdefault("inference", {}).setdefault("pitch_shifts", 0)
        if 6 <= version < 14:
            meta["options"].setdefault("inference", {}).setdefault("phase_sources", [])
        if 6 <= version < 15:
            meta["options"].setdefault("inference", {}).setdefault("match_level", False)
        if 6 <= version < 16:
            meta["options"].setdefault("training", {}).setdefault("reconstruction", False)
        if 6 <= version < 17:
            meta["options"].setdefault("training", {}).setdefault("level_ceilings", False)
        options = (SeparatorOptions.model_validate(meta["options"]) if version >= 6
                   else options_from_flat(meta["options"], version))
        required = (["psd"] if options.soft_mask != "dominance" else []) + (["dictionaries"] if options.dictionary_size else [])
        members = []
        with np.load(folder / "params.npz", allow_pickle=False) as data:
            for index in range(int(meta.get("model_sets", 1))):
                models = {}
                for name in meta["sources"]:
                    base = _prefix(index) + name
                    prefix = f"{base}/emission/"
                    emission = {key[len(prefix):]: data[key] for key in data.files if key.startswith(prefix)}
                    for key in required:
                        if key not in emission:
                            raise KeyError(f"{prefix}{key}")
                    models[name] = SourceModel(data[f"{base}/init"], data[f"{base}/trans"], emission)
                members.append(models)
        return members, int(meta["sample_rate"]), options, meta.get("adaptation")
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        detail = f"missing entry {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ValueError(f"{folder}: damaged or incomplete saved separator ({type(err).__name__}: {detail})") from None
