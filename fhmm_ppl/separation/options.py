"""How a separator is trained and applied: the settings sections of ``fhmm_ppl.settings``, resolved.

``SeparatorOptions`` holds the same sections as an experiment file (``features``, ``model``,
``training``, ``inference``) plus the seed, so an experiment's separator and one built in Python
read the same defaults. ``fit_separator`` also takes the flat keywords of ``FLAT_KEYS``
(``n_states=32``, ``emission="complex_gaussian"``, ...).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from fhmm_ppl.audio.features import STFTConfig
from fhmm_ppl.separation.emissions import EMISSIONS, get_emission
from fhmm_ppl.settings import (
    FeatureSettings,
    InferenceSettings,
    ModelSettings,
    SettingError,
    TaskOptions,
    TrainingSettings,
)

#: Flat keyword -> (section, field) for ``fit_separator(..., **flat)``: every field by its own name,
#: except the two ``method`` fields, which are ``trainer`` and ``inference``.
FLAT_KEYS = {
    **{name: ("features", name) for name in FeatureSettings.model_fields},
    **{name: ("model", name) for name in ModelSettings.model_fields if name not in ("plugins", "covariance_type")},
    **{name: ("training", name) for name in TrainingSettings.model_fields if name != "method"},
    **{name: ("inference", name) for name in InferenceSettings.model_fields if name != "method"},
    "trainer": ("training", "method"),
    "inference": ("inference", "method"),
}


class SeparatorOptions(TaskOptions):
    """A separator's settings: the experiment file's sections and the seed (k-means starts, SVI)."""

    model: ModelSettings = Field(default_factory=ModelSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)

    FLAT_KEYS: ClassVar[dict[str, tuple[str, str]]] = FLAT_KEYS
    KIND: ClassVar[str] = "separator"

    @model_validator(mode="after")
    def _fits_emission(self) -> "SeparatorOptions":
        check_separation(self.model, self.inference)
        return self

    @property
    def stft(self) -> STFTConfig:
        return STFTConfig(self.features.n_fft, self.features.hop_length)

    @property
    def evidence_scale(self) -> float:
        """The factor on frame log-likelihoods when separating (``likelihood_scale`` resolved)."""
        scale = self.inference.likelihood_scale
        return min(1.0, self.features.hop_length / self.features.n_fft) if scale is None else float(scale)

    def tracked_frames(self, sample_rate: int) -> float:
        """The tracked noise level's time constant in frames (``inference.tracked_seconds`` at
        ``sample_rate`` Hz and the STFT's hop; ``separation.averaging``)."""
        return self.inference.tracked_seconds * sample_rate / self.features.hop_length

    @property
    def soft_mask(self) -> str:
        """The soft mask (``inference.soft_mask`` resolved by the emission's default)."""
        return self.inference.soft_mask or get_emission(self.model.emission).soft_masks[0]

    @property
    def refine_iter(self) -> int:
        """Refinement iterations on each mixture (``inference.refine_iter`` resolved by the emission's default)."""
        n_iter = self.inference.refine_iter
        return get_emission(self.model.emission).refine_iter if n_iter is None else int(n_iter)

    @property
    def dictionary_size(self) -> int:
        """Spectra per state dictionary (``model.state_components`` resolved; 0: none)."""
        comps = self.model.state_components
        return get_emission(self.model.emission).state_components if comps is None else int(comps)


def check_separation(model: ModelSettings, inference: InferenceSettings) -> None:
    """One-line ``SettingError`` (naming the key) unless the model and inference sections suit
    separation: a registered emission, prior roles it has, a soft mask it makes, mean field only
    where it has an expected log-likelihood."""
    if model.emission not in EMISSIONS:
        raise SettingError("model.emission", f"emission must be one of {', '.join(EMISSIONS)} for separation, "
                                              f"got {model.emission!r}")
    emission = EMISSIONS[model.emission]
    roles = ("initial", "transition") + emission.prior_roles
    # unknown sources are learnt as complex-Gaussian spectra (psd), then fitted in the emission's parameters
    unknown_roles = tuple(dict.fromkeys(roles + ("psd",)))
    for key, role, allowed in ([("priors", r, roles) for r in model.priors]
                               + [("unknown_priors", r, unknown_roles) for r in model.unknown_priors]):
        if role not in allowed:
            raise SettingError(f"model.{key}.{role}", f"no prior role {role!r} for the {model.emission} emission; "
                                                       f"roles: {', '.join(sorted(allowed))}")
    if inference.soft_mask is not None and inference.soft_mask not in emission.soft_masks:
        raise SettingError("inference.soft_mask", f"soft_mask {inference.soft_mask!r} is not made by the "
                                                  f"{model.emission} emission; it makes {', '.join(emission.soft_masks)}")
    if model.unknown and not emission.adaptable:
        adaptable = [name for name, kind in EMISSIONS.items() if kind.adaptable]
        raise SettingError("model.unknown", f"semi-supervised adaptation (unknown sources) is available for the "
                                            f"{', '.join(adaptable)} emissions, not {model.emission}")
    if inference.refine_iter and not emission.refinable:
        refinable = [name for name, kind in EMISSIONS.items() if kind.refinable]
        raise SettingError("inference.refine_iter", f"refinement on the mixture is available for the "
                                                    f"{', '.join(refinable)} emissions, not {model.emission}")
    if inference.method == "mean_field" and not emission.mean_field:
        raise SettingError("inference.method", f"inference method mean_field is not available for the {model.emission} "
                                               "emission (it needs exact inference: method exact or auto); "
                                               "complex_gaussian has mean field")
