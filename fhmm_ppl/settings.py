"""The settings every part of fhmm-ppl reads: one schema, every default written once.

These pydantic models are the sections of an experiment file (``features``,
``model``, ``training``, ``inference``) and the library's options are built
from them: ``SeparatorOptions`` and ``ClassifierOptions`` hold these sections,
and ``fhmm_ppl.train.fit`` takes ``TrainingSettings``. Validation checks types,
ranges and combinations only: it never imports plug-ins or touches the disk
(that happens when a run starts, see ``fhmm_ppl.experiment.prepare``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class SettingError(ValueError):
    """A setting that does not fit the others, with the dotted ``key`` it belongs to (``model.emission``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Strict(BaseModel):
    """Frozen, no unknown keys (a misspelt key is an error, not a silently ignored default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSettings(Strict):
    """STFT frames, and mel bands where an emission or classifier uses them. The defaults are the
    separation defaults (64 ms frames at 16 kHz resolve harmonics; see docs/benchmarks.md)."""

    n_fft: int = Field(1024, ge=64, le=8192)
    hop_length: int = Field(256, ge=16, le=4096)
    n_mels: int = Field(64, ge=8, le=256)
    #: separation: a second separator at this n_fft (same overlap) where a source's training audio is
    #: mostly steady spectral lines (mains hum), used on mixtures that show them
    #: (``separation.resolution``); ``None`` or not above ``n_fft``: never
    line_n_fft: Optional[int] = Field(2048, ge=64, le=16384)

    @model_validator(mode="after")
    def _hop_within_frame(self) -> "FeatureSettings":
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft}): "
                             "samples between frames would be lost")
        return self


class PriorSettings(Strict):
    """A registered prior by name, with its hyperparameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


#: The priors of sources learnt on the mixture, over the model's (``ModelSettings.unknown_priors``).
UNKNOWN_PRIORS = {"psd": "shared_shape"}
#: the sources treated as the recording's noise unless ``inference.refine`` and ``inference.average``
#: say otherwise: refined on each mixture, their power averaged in the masks (skipped where a
#: separator has no source of that name; named explicitly, a missing source is an error)
NOISE_SOURCES = ("noise",)


def check_named(key: str, wanted, names) -> None:
    """One-line ``ValueError`` where ``wanted`` (the sources the setting ``key`` names) holds a name
    not in ``names`` (the sources there are)."""
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"{key} names {', '.join(missing)}, not one of the sources ({', '.join(names)})")


def check_noise_sources(key: str, wanted, names, active: bool) -> None:
    """``check_named`` for ``inference.refine`` or ``inference.average`` while the setting is
    ``active``; the default, ``NOISE_SOURCES``, is skipped where it is missing."""
    if active and tuple(wanted) != NOISE_SOURCES:
        check_named(key, wanted, names)


#: seconds over which the masks average the power of the ``inference.average`` sources
#: (``separation.averaging``; chosen on real speech, docs/benchmarks.md)
AVERAGE_SECONDS = 0.5
#: the same where every noise's training audio repeats its long-term spectrum (``fit_separator``'s
#: choice where ``inference.average_seconds`` is unset): a steady level, held over most of a recording
REPEATING_AVERAGE_SECONDS = 5.0
#: how each frame moves that average: by the source's presence in the frame (a speech-presence noise
#: tracker), or as the running mean of the power its mask gives it (separators saved in format 9)
AverageRule = Literal["presence", "share"]
AVERAGE_RULES = get_args(AverageRule)
#: the presence rule's ceilings (``averaging.level_ceilings``, learnt from each averaged noise's
#: training audio where ``training.level_ceilings``): once a bin's weights reach
#: ``CEILING_WARMUP`` frames, a frame pulls the level towards at most ``c_f`` times the level,
#: ``c_f`` the ``CEILING_QUANTILE`` of the training noise's own power over its level before each
#: frame, at least ``CEILING_FLOOR`` (a Gaussian noise's bin passes 8 times its mean once in 3000
#: frames); the level stays at least the level without ceilings over ``CEILING_BOUND``, so one
#: that starts far too low (silence, then noise) still rises
CEILING_QUANTILE = 0.999
CEILING_FLOOR = 8.0
CEILING_WARMUP = 8.0
CEILING_BOUND = 4.0


class ModelSettings(Strict):
    """The per-source (or per-class) HMMs.

    ``emission`` names a separation emission (``log_mel``, ``complex_gaussian``, ``logmax``; see
    ``fhmm_ppl.separation.emissions``) or ``gaussian`` for classification. ``n_states``: states per
    source HMM (per class HMM in classification, where it defaults to 4); ``None``, separation's
    default, gives each source states in proportion to its seconds of training audio
    (``separation.training.states_for``: 16 for 6 s, 32 from 13 s). ``state_components``:
    spectra in each state's NMF dictionary (``None``: the emission's default). ``priors`` maps a
    role (``initial``, ``transition`` and the emission's parameters) to a registered prior;
    ``plugins`` are Python files imported when a run starts, so the priors they register can be named.
    ``unknown`` names sources with no training audio, learnt on each mixture with ``unknown_states``
    states each (semi-supervised separation, ``separation.adaptation``) under the ``priors`` with
    ``unknown_priors`` over them (``null`` for a role drops the model's prior there; by default a
    ``shared_shape`` on ``psd``: one spectral shape at a few levels, a stationary noise, which
    keeps the unknown chain off the known sources' sounds: docs/separation.md).
    """

    emission: str = "log_mel"
    n_states: Optional[int] = Field(None, ge=1, le=256)
    state_components: Optional[int] = Field(None, ge=0, le=128)
    covariance_type: Literal["diag", "full", "tied", "spherical"] = "diag"
    priors: dict[str, PriorSettings] = Field(default_factory=dict)
    plugins: list[str] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list)
    unknown_states: int = Field(4, ge=1, le=64)
    unknown_priors: dict[str, Optional[PriorSettings]] = Field(
        default_factory=lambda: {role: PriorSettings(name=name) for role, name in UNKNOWN_PRIORS.items()})

    @field_validator("unknown", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        """``unknown: noise`` names one source as ``[noise]`` does."""
        return [value] if isinstance(value, str) else value

    def prior_specs(self) -> dict[str, dict]:
        """The priors as ``{role: {"name": ..., "params": {...}}}`` (what ``models.make_spec`` takes)."""
        return {role: {"name": p.name, "params": dict(p.params)} for role, p in self.priors.items()}

    def unknown_prior_specs(self) -> dict[str, dict]:
        """The priors of sources learnt on the mixture: ``prior_specs`` with ``unknown_priors`` over them."""
        specs = self.prior_specs()
        for role, p in self.unknown_priors.items():
            specs.pop(role, None)
            if p is not None:
                specs[role] = {"name": p.name, "params": dict(p.params)}
        return specs

    @model_validator(mode="after")
    def _covariance_for_gaussian(self) -> "ModelSettings":
        if self.emission != "gaussian" and self.covariance_type != "diag":
            raise ValueError(f"covariance_type applies to the gaussian emission only, not {self.emission}")
        return self


#: The model section's defaults for classification (one Gaussian HMM per label).
CLASSIFICATION_MODEL = {"emission": "gaussian", "n_states": 4}
#: The features section's defaults for classification (32 ms frames, as the study it follows).
CLASSIFICATION_FEATURES = {"n_fft": 512}


def check_classification(model: ModelSettings) -> None:
    """One-line ``ValueError`` unless ``model`` suits classification: the gaussian emission and a
    state count (``None``, which leaves it to the training audio, is separation's)."""
    if model.emission != "gaussian":
        raise ValueError(f"classification uses the gaussian emission, not {model.emission!r}")
    if model.n_states is None:
        raise ValueError("model.n_states: classification needs a number of states per class HMM (null is for separation)")


class TrainingSettings(Strict):
    """How each HMM is trained.

    ``method``: EM (closed-form MAP M-step) or SVI (NumPyro + optax). ``max_iter``: EM iterations;
    ``svi_steps``: SVI steps. ``n_init`` runs from seeds ``seed, seed + 1, ...`` keep the best final
    objective (EM finds local optima); ``n_models`` independently trained models per source are an
    ensemble whose masks a separator averages. ``adapt_iter``: EM iterations of each adaptation of
    the unknown sources to a mixture. ``reconstruction``: where states have NMF dictionaries, the
    sources not refined on each mixture learn factors for their shares of the fit on mixtures of
    the training audio (``separation.reconstruction``); ``None``: where there is noise, every
    noise's training audio repeats its long-term spectrum and none is a hum's lines
    (``reconstruction.learns``; the choice is saved with the separator). ``level_ceilings``: each
    noise whose power the masks track (``inference.average``) keeps, per frequency bin, how far its
    training audio's power rises above its tracked level, and the tracked level takes no frame's
    pull beyond that (``averaging.level_ceilings``): a pull above anything the noise did in training
    is the speech.
    """

    method: Literal["em", "svi"] = "em"
    max_iter: int = Field(50, ge=1, le=10000)
    svi_steps: int = Field(500, ge=1, le=100000)
    n_init: int = Field(1, ge=1, le=20)
    n_models: int = Field(3, ge=1, le=10)
    adapt_iter: int = Field(30, ge=1, le=1000)
    reconstruction: Optional[bool] = None
    level_ceilings: bool = True


class InferenceSettings(Strict):
    """How a mixture is separated.

    ``method``: ``auto`` (exact while it fits the planner's budget, else mean field), ``exact`` or
    ``mean_field``. ``mask``: ``soft`` masks from the posterior, or ``binary`` (the dominant
    source per bin). ``soft_mask``: which soft mask an emission makes (``None``: the emission's
    default; see ``fhmm_ppl.separation.masks``). ``likelihood_scale`` multiplies the frames'
    log-likelihoods when separating (``None``: ``hop_length / n_fft``, which counts each sample of
    overlapping frames once; ``1``: the plain model). ``dictionary_states``: where states have NMF
    dictionaries, how many of each source's most probable states per frame explain it together
    (two gain on real speech over one: docs/benchmarks.md). ``refine``: trained sources whose
    state spectra are re-estimated on each mixture before separating, held near their training
    by a prior worth ``refine_strength`` frames per state, in ``refine_iter`` EM iterations
    (``None``: the emission's default; 0: no refinement; ``separation.refinement``) whose
    E-steps read every ``refine_stride``-th frame (twice as fast at 2, as good on real speech:
    docs/benchmarks.md). By default
    the source named ``noise``, where there is one: on real speech refining the noise gains most,
    refining the speech too loses on recorded dishes (docs/benchmarks.md). ``average``: sources
    whose power the masks take as a level tracked over ``average_seconds`` (0: none) instead of
    frame by frame, by ``average_rule`` (``separation.averaging``; by default the source named
    ``noise``, tracked by its presence; ``average_seconds`` ``None``: ``fit_separator`` chooses
    ``REPEATING_AVERAGE_SECONDS`` where every noise's training audio repeats its long-term spectrum,
    else ``AVERAGE_SECONDS``, which a separator built without it also takes).
    ``pitch_shifts``: where states have NMF dictionaries, each frame may take the dictionaries of the
    sources that are not noise (not in ``refine`` or ``average``) warped in frequency by up to this
    many quarter tones either way, whichever warp fits it best, each such source its own warp (0:
    none; ``None``: ``fit_separator`` chooses, 2 where every noise's training audio is steady or no
    source is noise, else 0; ``separation.warps``).
    ``phase_sources``: sources whose estimates take a phase of their own, retrieved from their masked
    magnitudes, the others sharing what they leave (``separation.phase``; ``[]``: none, every
    estimate keeps the mixture's phase; ``None``: ``fit_separator`` chooses, where states have NMF
    dictionaries, the noise sources whose training audio is mostly spectral lines (at
    ``features.line_n_fft``), such as mains hum, but none for the separator at ``line_n_fft``, which
    resolves the lines). ``match_level``: every source's spectra scaled to the recording's level
    (its mean power against the models') before separating, so that a recording made louder or
    quieter than the training audio separates as one at it (``separation.level``). ``source_levels``:
    after a first separation, each source not refined takes a level of its own, read off the power
    its mask gives it, and the mixture is separated again (twice the time), for sources whose
    loudness changed apart from their training audio: talkers at other distances, an interferer
    mixed quieter than it was trained (``separation.level``).
    """

    method: Literal["auto", "exact", "mean_field"] = "auto"
    mask: Literal["soft", "binary"] = "soft"
    soft_mask: Optional[Literal["blend", "dominance", "wiener"]] = None
    likelihood_scale: Optional[float] = Field(None, gt=0, le=10, allow_inf_nan=False)
    dictionary_states: int = Field(2, ge=1, le=8)
    refine: list[str] = Field(default_factory=lambda: list(NOISE_SOURCES))
    refine_iter: Optional[int] = Field(None, ge=0, le=1000)
    refine_strength: float = Field(10.0, gt=1, le=1e6, allow_inf_nan=False)
    refine_stride: int = Field(2, ge=1, le=16)
    average: list[str] = Field(default_factory=lambda: list(NOISE_SOURCES))
    average_seconds: Optional[float] = Field(None, ge=0, le=3600, allow_inf_nan=False)
    average_rule: AverageRule = "presence"
    pitch_shifts: Optional[int] = Field(None, ge=0, le=12)
    phase_sources: Optional[list[str]] = None
    match_level: bool = True
    source_levels: bool = False

    @property
    def tracked_seconds(self) -> float:
        """``average_seconds``, ``AVERAGE_SECONDS`` where unset (0: the masks frame by frame)."""
        return AVERAGE_SECONDS if self.average_seconds is None else self.average_seconds

    @property
    def noise_sources(self) -> set[str]:
        """The sources taken as the recording's noise, those refined or averaged: the others are speech."""
        return set(self.refine) | set(self.average)

    @model_validator(mode="after")
    def _prior_outweighs_a_frame(self) -> "InferenceSettings":
        if self.refine_iter != 0 and self.refine_strength <= self.refine_stride:  # 0: no refinement to weigh
            raise ValueError(f"refine_strength ({self.refine_strength:g}) must exceed refine_stride "
                             f"({self.refine_stride}): the prior weighs refine_strength / refine_stride frames read")
        return self

    @field_validator("refine", "average", "phase_sources", mode="before")
    @classmethod
    def _one_source(cls, value: Any) -> Any:
        """``refine: noise`` names one source as ``[noise]`` does (and so for ``average`` and ``phase_sources``)."""
        return [value] if isinstance(value, str) else value

    @field_validator("likelihood_scale", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a positive number (or empty for hop_length / n_fft), got {value!r}")
        return value


class ClassificationSettings(Strict):
    """Classifying recordings: features, scaling, decision rule and evaluation split.

    ``features``: ``mfcc`` or ``log_mel`` frames with ``n_features`` coefficients or bands.
    ``scaler``: ``minmax``, ``standard`` or ``none``, fitted on the training recordings only.
    ``class_priors`` adds the log training label frequency to each score. ``split: cv`` tests
    every recording once over ``n_splits`` folds; ``holdout`` tests about ``test_fraction`` of
    them once. Splits are stratified by label and, with ``grouped``, keep each group (room,
    array, session) on one side.
    """

    features: Literal["mfcc", "log_mel"] = "mfcc"
    n_features: int = Field(40, ge=1, le=128)
    scaler: Literal["minmax", "standard", "none"] = "minmax"
    class_priors: bool = False
    split: Literal["cv", "holdout"] = "cv"
    grouped: bool = True
    n_splits: int = Field(4, ge=2, le=20)
    test_fraction: float = Field(0.25, gt=0.05, lt=0.9)


class TaskOptions(Strict):
    """A task's options: settings sections and the seed, also settable by flat keywords. Subclasses
    add their own sections.

    ``FLAT_KEYS`` maps each flat keyword to its ``(section, field)``; ``KIND`` names the task in errors.
    """

    features: FeatureSettings = Field(default_factory=FeatureSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    seed: int = Field(0, ge=0)

    FLAT_KEYS: ClassVar[dict[str, tuple[str, str]]] = {}
    KIND: ClassVar[str] = "task"

    @classmethod
    def from_flat(cls, base: "TaskOptions | None" = None, **flat: Any):
        """``base`` (default: the defaults) with flat keywords applied, e.g. ``n_states=32, trainer="svi"``;
        a bad name or value is one ``ValueError`` line naming the keyword."""
        sections = (base or cls()).model_dump()
        for key, value in flat.items():
            if key == "seed":
                sections["seed"] = value
                continue
            if key not in cls.FLAT_KEYS:
                raise ValueError(f"unknown {cls.KIND} option {key!r}; options: seed, {', '.join(cls.FLAT_KEYS)}")
            section, name = cls.FLAT_KEYS[key]
            sections[section][name] = value
        try:
            return cls.model_validate(sections)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            flat_name = next((k for k, v in cls.FLAT_KEYS.items() if ".".join(v) == where), where)
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] != "value_error":
                message += f" (got {first['input']!r})"
            raise ValueError(f"{flat_name}: {message}" if flat_name else message) from None

    def replace(self, **flat: Any):
        """A copy with flat keywords applied (``options.replace(n_states=32)``)."""
        return type(self).from_flat(self, **flat)
