"""The experiment file: a validated schema with one-line errors and ``--set`` overrides.

The ``features``, ``model``, ``training``, ``inference`` and ``classification`` sections are the
settings of ``fhmm_ppl.settings`` (one schema for the experiment and the library); ``data``,
``evaluation``, ``tracking`` and ``sweep`` are the experiment's own. Errors name the dotted path
of the bad entry and what is wrong: an unknown key (with the closest valid one, or the new name
of a renamed one), a wrong type or range, a combination that cannot work. Validation reads
nothing but the file: plug-ins are imported and data globs expanded when a run starts
(``fhmm_ppl.experiment.prepare``).
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fhmm_ppl.experiment.sweep_config import SweepConfig
from fhmm_ppl.separation.options import check_separation
from fhmm_ppl.settings import (
    CLASSIFICATION_FEATURES,
    CLASSIFICATION_MODEL,
    ClassificationSettings,
    FeatureSettings,
    InferenceSettings,
    ModelSettings,
    SettingError,
    TrainingSettings,
    check_classification,
    check_named,
    check_noise_sources,
)

#: Keys that were renamed: (section, old key) -> the new dotted key.
RENAMED_KEYS = {("inference", "logmax_mask"): "inference.soft_mask"}
#: Values that were renamed: (section, key, old value) -> the new value.
RENAMED_VALUES = {("inference", "mask", "wiener"): "soft"}


class ConfigError(ValueError):
    """A problem in an experiment file, reported as one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestFileConfig(_Strict):
    """A test mixture given as a file, with one reference file per source."""

    mixture: str
    references: dict[str, str]


class DataConfig(_Strict):
    """Where the audio comes from.

    ``demo``: the built-in demo task (no download). ``files``: the user's own
    recordings: for separation, training files (paths or globs) per source,
    and test mixtures either as files with references, or made from clean test
    files per source at ``snr_db``; for classification, files per class
    (``classes``). ``mma``: the microphone-array dataset under ``root``.
    ``max_seconds`` reads at most that much of each classification recording.
    ``mma_task``: ``two_talkers`` sums the solo recordings of ``talkers``;
    ``real_mix`` separates the recorded ten-talker mix (references: the ten
    solo recordings at the same array). Files, globs and ``root`` are checked
    when a run starts, not here.
    """

    source: Literal["demo", "files", "mma"] = "demo"
    task: Literal["speech_noise", "speech_chirp", "two_talkers"] = "speech_noise"
    noise: Literal["white", "pink", "brown", "hum", "babble"] = "pink"
    snr_db: float = 0.0
    test_seconds: float = Field(8.0, gt=0.5, le=8.0)
    sample_rate: int = Field(16000, ge=4000, le=96000)
    channel: Union[int, Literal["mean"]] = "mean"
    train: dict[str, list[str]] = Field(default_factory=dict)
    classes: dict[str, list[str]] = Field(default_factory=dict)
    max_seconds: Optional[float] = Field(None, gt=0)
    test: list[TestFileConfig] = Field(default_factory=list)
    test_clean: dict[str, list[str]] = Field(default_factory=dict)
    root: Optional[str] = None
    array: Literal["wearable", "tabletop"] = "wearable"
    array_number: int = Field(1, ge=1, le=12)
    talkers: list[int] = Field(default_factory=lambda: [1, 2])
    mma_task: Literal["two_talkers", "real_mix"] = "two_talkers"
    train_fraction: float = Field(0.7, gt=0.1, lt=0.95)

    @model_validator(mode="after")
    def _mma_given(self) -> "DataConfig":
        if self.source == "mma":
            if not self.root:
                raise ValueError("root must name the dataset folder when source is 'mma'")
            if len(set(self.talkers)) < 2 or not all(1 <= t <= 10 for t in self.talkers):
                raise ValueError(f"talkers needs at least two different talker numbers in 1-10, got {self.talkers}")
            if self.array == "wearable" and self.array_number > 4:
                raise ValueError(f"wearable arrays are numbered 1-4, got {self.array_number}")
        return self

    @field_validator("snr_db")
    @classmethod
    def _finite_snr(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number of dB, got {value}")
        return value

    @model_validator(mode="after")
    def _files_listed(self) -> "DataConfig":
        if self.source == "files":
            for kind, entries in (("train", self.train), ("test_clean", self.test_clean), ("classes", self.classes)):
                for name, patterns in entries.items():
                    if not patterns:
                        raise ValueError(f"{kind}.{name} lists no files")
        return self


class EvaluationConfig(_Strict):
    """What a separation run scores besides the FHMM: baselines, and streaming at ``stream_lags``
    (seconds; each test mixture streamed in chunks of ``stream_chunk`` samples at each lag)."""

    baselines: list[Literal["nmf", "irm", "ibm"]] = Field(default_factory=lambda: ["nmf", "irm", "ibm"])
    nmf_components: int = Field(32, ge=1, le=512)
    stream_lags: list[float] = Field(default_factory=list)
    stream_chunk: int = Field(1024, ge=1, le=1_000_000)

    @field_validator("stream_lags")
    @classmethod
    def _lags(cls, value: list) -> list:
        if any(not math.isfinite(lag) or lag < 0 for lag in value):
            raise ValueError(f"lags are seconds, finite and at least 0, got {value}")
        return sorted(set(value))


class TrackingConfig(_Strict):
    experiment: Optional[str] = None
    run_name: Optional[str] = None
    uri: Optional[str] = None


#: Per task, the config sections it never reads (not logged as a run's params).
UNUSED_SECTIONS = {"separation": ("classification",), "classification": ("inference", "evaluation")}


class ExperimentConfig(_Strict):
    """A whole experiment: what to separate or classify, how to model and train, what to report."""

    name: str = "experiment"
    task: Literal["separation", "classification"] = "separation"
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    classification: ClassificationSettings = Field(default_factory=ClassificationSettings)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw: Any) -> Any:
        """A renamed key or value is one line naming its new spelling, not an unknown-key hint."""
        if isinstance(raw, dict):
            for (section, key), new in RENAMED_KEYS.items():
                if isinstance(raw.get(section), dict) and key in raw[section]:
                    raise ValueError(f"{section}.{key} is now {new}")
            for (section, key, old), new in RENAMED_VALUES.items():
                if isinstance(raw.get(section), dict) and raw[section].get(key) == old:
                    raise ValueError(f"{section}.{key}: {old} is now {section}.{key}: {new}")
        return raw

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        """A classification experiment's model and features sections default to ``CLASSIFICATION_MODEL``
        and ``CLASSIFICATION_FEATURES``."""
        if isinstance(raw, dict) and raw.get("task") == "classification":
            for section, defaults in (("model", CLASSIFICATION_MODEL), ("features", CLASSIFICATION_FEATURES)):
                given = raw.get(section)
                given = dict(given) if isinstance(given, dict) else ({} if given is None else given)
                if isinstance(given, dict):
                    raw = {**raw, section: {**defaults, **given}}
        return raw

    @model_validator(mode="after")
    def _task_fits(self) -> "ExperimentConfig":
        if self.task == "classification":
            check_classification(self.model)
            if self.data.source == "files" and len(self.data.classes) < 2:
                raise ValueError("data.classes (files per class label, at least two classes) is needed for classification on files")
            return self
        if self.model.emission == "gaussian":
            raise ValueError("the gaussian emission is for classification; separation uses log_mel, complex_gaussian or logmax")
        if self.data.classes:
            raise ValueError("data.classes is for classification; separation trains on data.train")
        try:
            check_separation(self.model, self.inference)
        except SettingError as err:
            raise ValueError(f"{err.key}: {err}") from None
        if self.data.source == "files":
            unknown = set(self.model.unknown)
            if unknown & set(self.data.train):
                raise ValueError(f"model.unknown names {sorted(unknown & set(self.data.train))}, which data.train gives "
                                 "training files for: an unknown source is learnt on each mixture")
            if len(self.data.train) + len(unknown) < 2:
                raise ValueError("data.train needs training files for at least two sources when data.source is 'files' "
                                 "(or one, and model.unknown naming the others)")
            if not self.data.test and not self.data.test_clean:
                raise ValueError("data.test (mixtures with references) or data.test_clean (clean files per source) is needed")
            sources = sorted(set(self.data.train) | unknown)
            check_noise_sources("inference.refine", self.inference.refine, sources, self.inference.refine_iter != 0)
            check_noise_sources("inference.average", self.inference.average, sources, self.inference.tracked_seconds > 0)
            check_named("inference.phase_sources", self.inference.phase_sources or [], sources)
            named = [("data.test_clean", sorted(self.data.test_clean))] if self.data.test_clean else []
            named += [(f"data.test[{i}].references", sorted(item.references)) for i, item in enumerate(self.data.test)]
            for where, names in named:
                if names != sources:
                    raise ValueError(f"{where} names {names}, but the training sources are {sources}")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def flat(self) -> dict[str, Any]:
        """The config flattened to dotted keys (MLflow params), without the sweep grid and the sections
        its task does not read (``UNUSED_SECTIONS``), so that runs compare on what made them."""
        return _flatten(self.model_dump(mode="json", exclude={"sweep", *UNUSED_SECTIONS[self.task]}))

    def variants(self) -> list[tuple[dict[str, Any], "ExperimentConfig"]]:
        """Every point of the sweep grid as ``(overrides, validated config)``; one point if no grid.

        For a search, the configs at the ends of every range and at every listed choice (what
        ``fhmm-ppl validate`` checks before a search draws its points)."""
        sweep = self.sweep
        if sweep.search == "optuna":
            return [({k: v}, self.point({k: v})) for k, entry in sweep.space.items()
                    for v in (entry if isinstance(entry, list) else entry.ends())]
        if not sweep.grid:
            return [({}, self)]
        keys = list(sweep.grid)
        return [(overrides, self.point(overrides))
                for overrides in (dict(zip(keys, values)) for values in itertools.product(*sweep.grid.values()))]

    def point(self, overrides: dict[str, Any]) -> "ExperimentConfig":
        """This experiment with dotted-key ``overrides`` applied and no sweep: one grid point or trial."""
        base = self.model_dump(mode="json", exclude={"sweep"})
        raw = apply_overrides(base, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in overrides.items()])
        return parse_config(raw, f"sweep point {overrides}")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    out[prefix[:-1]] = tree
    return out


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """Valid keys of the sub-model at ``path`` (for did-you-mean hints)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        valid = _fields_at(ExperimentConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"; did you mean {'.'.join(map(str, loc[:-1] + (close[0],)))!r}?" if close else f"; valid keys: {', '.join(valid)}"
        return f"unknown key {dotted!r}{hint}"
    message = first["msg"].removeprefix("Value error, ")
    if not loc and first["type"] == "value_error":
        return message
    return f"{dotted}: {message}" + (f" (got {first['input']!r})" if first["type"] != "value_error" and not isinstance(first.get("input"), dict) else "")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``path.to.key=value`` overrides (values parsed as YAML) to a raw config dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. model.n_states=64")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: {key.strip()!r} is not a dotted key, e.g. model.n_states=64")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({getattr(err, 'problem', None) or err})") from None
        if parts[0] == "sweep" and len(parts) > 2:  # --set sweep.model.n_states=16,32: a grid entry
            if isinstance(parsed, str) and "," in parsed:
                parsed = [yaml.safe_load(v) for v in parsed.split(",")]
            raw["sweep"] = {**(raw.get("sweep") or {}), ".".join(parts[1:]): parsed if isinstance(parsed, list) else [parsed]}
            continue
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = parsed
    return raw


def parse_config(raw: Any, source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping into an ``ExperimentConfig`` (``ConfigError`` with one line)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_one_line(err)}") from None


def load_config(path: Union[str, Path], overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Read, override and validate an experiment file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such experiment file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (give the experiment's YAML file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (an experiment is a YAML file)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where} ({getattr(err, 'problem', err)})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw = apply_overrides(raw or {}, overrides or [])
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("plugins"), list):
        # Plugin paths are relative to the experiment file when they exist there.
        model["plugins"] = [str(path.parent / p) if isinstance(p, str) and not Path(p).is_absolute()
                            and (path.parent / p).is_file() else p for p in model["plugins"]]
    return parse_config(raw, str(path))
