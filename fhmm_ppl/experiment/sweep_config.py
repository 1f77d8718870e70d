"""The ``sweep:`` section of an experiment: which variants to run, and where.

A sweep is a grid (every combination of the listed values) or a search (Optuna's TPE sampler
draws ``trials`` points from ``space``); either runs sequentially in this process or as Ray
tasks. Dotted keys written directly under ``sweep:`` are grid entries, so the short form
``sweep: {model.n_states: [16, 32]}`` stays valid::

    sweep:
      model.n_states: [16, 32]             # grid entries: dotted keys, lists of values
      executor: ray                        # sequential (default) | ray
      address: ray://head:10001            # an existing Ray cluster (default: a local one for the sweep)
      cpus_per_task: 1

    sweep:
      search: optuna
      trials: 20
      space:
        model.n_states: {low: 8, high: 64, log: true}       # integers: both ends integers
        inference.likelihood_scale: {low: 0.1, high: 1.0}   # floats
        model.emission: [log_mel, complex_gaussian]         # categorical: a list
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Columns of the sweep table (and ``fhmm-ppl compare``) per task: (heading, MLflow metric).
HEADLINE = {
    "separation": [("FHMM SDRi", "fhmm.mean.sdr_improvement"), ("FHMM SDR", "fhmm.mean.sdr"),
                   ("FHMM SI-SDR", "fhmm.mean.si_sdr"), ("NMF SDRi", "nmf.mean.sdr_improvement"),
                   ("IRM SDRi", "irm.mean.sdr_improvement")],
    "classification": [("accuracy", "accuracy"), ("bal. acc.", "balanced_accuracy"), ("F1 macro", "f1_macro"),
                       ("prec. macro", "precision_macro"), ("rec. macro", "recall_macro")],
}
#: What a sweep may not vary: its own settings and where runs are tracked.
UNSWEPT = ("sweep", "tracking")


class SearchRange(BaseModel):
    """A numeric range of a search: integers when both ends are integers, floats otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: Union[int, float]
    high: Union[int, float]
    log: bool = False
    step: Optional[Union[int, float]] = None

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)

    def ends(self) -> list:
        """Both ends: the values ``fhmm-ppl validate`` checks a config at."""
        return [self.low, self.high]


class SweepConfig(BaseModel):
    """Grid entries, or a search space, and the executor that runs the points (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    executor: Literal["sequential", "ray"] = "sequential"
    address: Optional[str] = None
    cpus_per_task: float = Field(1.0, gt=0)
    search: Literal["grid", "optuna"] = "grid"
    trials: int = Field(10, ge=1)
    space: dict[str, Union[list[Any], SearchRange]] = Field(default_factory=dict)
    metric: Optional[str] = None
    direction: Literal["maximize", "minimize"] = "maximize"
    prune: bool = True

    @model_validator(mode="before")
    @classmethod
    def _dotted_keys_are_grid(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            dotted = {k: v for k, v in raw.items() if isinstance(k, str) and "." in k}
            if dotted:
                raw = {k: v for k, v in raw.items() if k not in dotted}
                raw["grid"] = {**dict(raw.get("grid") or {}), **dotted}
        return raw

    @field_validator("space", mode="before")
    @classmethod
    def _ranges(cls, raw: Any) -> Any:
        """Each entry is a list (categorical) or a range; a bad range is one line naming its key."""
        if not isinstance(raw, dict):
            return raw
        out = {}
        for key, entry in raw.items():
            if isinstance(entry, dict):
                try:
                    entry = SearchRange.model_validate(entry)
                except ValidationError as err:
                    first = err.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    raise ValueError(f"{key}{'.' + where if where else ''}: "
                                     f"{first['msg'].removeprefix('Value error, ')}") from None
            elif not isinstance(entry, (list, SearchRange)):
                raise ValueError(f"{key}: give a list of choices or a range {{low: .., high: ..}}, "
                                 f"not {entry!r}")
            out[key] = entry
        return out

    @model_validator(mode="after")
    def _consistent(self) -> "SweepConfig":
        for where, entries in (("grid", self.grid), ("space", self.space)):
            for key, values in entries.items():
                if key.split(".")[0] in UNSWEPT:
                    raise ValueError(f"cannot sweep over {key!r}")
                if "." not in key:
                    raise ValueError(f"{where} entry {key!r} is not a dotted key such as model.n_states")
                if isinstance(values, list) and not values:
                    raise ValueError(f"{where} entry {key!r} has no values")
        if self.search == "grid" and self.space:
            raise ValueError("sweep.space is for search: optuna; a grid lists values under sweep.grid")
        if self.search == "optuna" and not self.space:
            raise ValueError("search: optuna needs sweep.space (ranges or lists of values to draw from)")
        if self.address and self.executor != "ray":
            raise ValueError("sweep.address names a Ray cluster: set executor: ray")
        return self

    @property
    def active(self) -> bool:
        """Whether there is anything to sweep (a grid, or a search)."""
        return bool(self.grid) or self.search == "optuna"

    def describe(self) -> str:
        """``grid of 4 points`` or ``optuna search of 20 trials``, with ``on ray`` when it applies."""
        if self.search == "optuna":
            what = f"optuna search of {self.trials} trials"
        else:
            points = 1
            for values in self.grid.values():
                points *= len(values)
            what = f"grid of {points} points"
        return what + (" on ray" if self.executor == "ray" else "")
