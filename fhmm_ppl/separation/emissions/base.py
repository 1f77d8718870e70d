"""What a separation emission is: the observation model of one source HMM and of their mixture.

An emission is a class; a separator makes one instance for its STFT settings and sample
rate. It provides:

- class attributes: ``name`` (the registry key, ``model.emission`` in YAML), ``family`` (the
  ``fhmm_ppl.models`` family a source HMM is trained with) and ``family_options``,
  ``prior_roles`` (the emission parameters a prior can be put on), ``soft_masks`` (the soft
  masks of ``fhmm_ppl.separation.masks`` it can make; the first is its default),
  ``state_components`` (default spectra per state dictionary; 0: none), ``mean_field``
  (whether it has the expected log-likelihood structured mean field needs), ``frame_local``
  (whether ``frames`` treats each STFT frame on its own, which streaming needs), and ``Params``,
  a NamedTuple of K-tuples of arrays: every source's emission parameters, a pytree;
- ``frames(spectrum)``: the model frames ``(T, D)`` of a complex STFT ``(T, F)``;
- ``source_params(fitted, power, marginals)``: the arrays kept (and saved) per trained source,
  which always include ``psd`` ``(N, F)``, each state's power spectrum (Wiener masks);
- ``prepare(params, scale)``: what the log-likelihood needs that does not depend on the
  mixture, computed once per set of source models (default: the parameters and the scale);
- ``log_lik(prepared, frames)``: scaled frame log-likelihoods of every joint state
  ``(T, N_1, ..., N_K)``;
- ``mean_field_marginals(log_init, log_trans, params, frames, scale, length)`` where
  ``mean_field`` is true: per-source state marginals K x ``(T, N_k)`` by structured mean field
  (``hmm.structured_mean_field``), frames ``t >= length`` being padding that observes nothing
  (a separator pads frames to ``runtime.frame_bucket`` sizes);
- ``spread(masks)``: masks over the frames' D dimensions ``(K, T, D)`` to STFT bins ``(K, T, F)``
  (identity where D is F);
- ``with_spectra(kept, psd)`` where ``refinable`` is true: a source's kept arrays with its states'
  power spectra changed (refinement on a mixture, ``separation.refinement``), its other
  parameters moved to match; ``refine_iter`` says how many refinement iterations a separator
  runs on each mixture by default (``inference.refine_iter``).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from fhmm_ppl.settings import FeatureSettings

#: Added to magnitudes before a log (silence stays finite).
LOG_FLOOR = 1e-5


class Emission(abc.ABC):
    """Base class: see the module docstring for what a subclass provides."""

    name: ClassVar[str]
    family: ClassVar[str]
    family_options: ClassVar[Mapping[str, Any]] = {}
    prior_roles: ClassVar[tuple[str, ...]]
    soft_masks: ClassVar[tuple[str, ...]] = ("wiener",)
    state_components: ClassVar[int] = 0
    mean_field: ClassVar[bool] = False
    frame_local: ClassVar[bool] = True
    #: whether ``source_params`` reads the training frames' state posteriors (a smoother pass per source)
    uses_marginals: ClassVar[bool] = True
    #: whether unknown sources can be learnt on a mixture (``separation.adaptation``: in the complex-Gaussian
    #: model, then fitted to the frames of their expected magnitudes; false where frames need the STFT's phase)
    adaptable: ClassVar[bool] = True
    #: whether ``with_spectra`` expresses refined state spectra in this emission's parameters
    refinable: ClassVar[bool] = False
    #: refinement iterations on each mixture unless ``inference.refine_iter`` says otherwise
    refine_iter: ClassVar[int] = 0
    Params: ClassVar[type]

    def __init__(self, features: FeatureSettings, sample_rate: int) -> None:
        self.features = features
        self.sample_rate = int(sample_rate)

    @abc.abstractmethod
    def frames(self, spectrum: np.ndarray) -> np.ndarray:
        """Model frames ``(T, D)`` float32 of a complex STFT ``(T, F)``."""

    @abc.abstractmethod
    def source_params(self, fitted, power: np.ndarray, marginals: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays kept per trained source (``psd (N, F)`` among them), from its fitted one-chain
        ``FHMMParams``, its training STFT power ``(T, F)`` and state posteriors ``(T, N)``."""

    def stack(self, sources: Sequence[Mapping[str, np.ndarray]]) -> NamedTuple:
        """``Params`` of K sources from their saved arrays, as float32 device arrays (``None`` for a
        field some source was saved without, e.g. state spectra of older formats)."""
        def field(key):
            if not all(key in s for s in sources):
                return None
            return tuple(jnp.asarray(s[key], jnp.float32) for s in sources)

        return self.Params(*(field(key) for key in self.Params._fields))

    def prepare(self, params: NamedTuple, scale: float) -> Any:
        return params, scale

    @abc.abstractmethod
    def log_lik(self, prepared: Any, frames) -> Any:
        """Scaled log-likelihoods ``(T, N_1, ..., N_K)`` of model frames ``(T, D)``."""

    def spread(self, masks: np.ndarray) -> np.ndarray:
        return masks

    def with_spectra(self, kept: Mapping[str, np.ndarray], psd: np.ndarray) -> dict[str, np.ndarray]:
        """A source's kept arrays with its states' power spectra ``psd (N, F)`` in place of
        ``kept["psd"]``; each state's dictionary spectra (where kept) scaled bin by bin with the
        change of its magnitude, ``sqrt(psd / kept["psd"])``. Emissions whose log-likelihood reads
        other parameters move those too (``LogMax``: its means); a refinable emission's
        ``with_spectra`` must leave every parameter unchanged when ``psd`` is the kept one."""
        if not self.refinable:
            raise ValueError(f"the {self.name} emission cannot take refined state spectra (refinable is false); "
                             "set inference.refine_iter to 0")
        old, new = np.asarray(kept["psd"], np.float64), np.asarray(psd, np.float64)
        out = {**kept, "psd": new.astype(np.float32)}
        if "dictionaries" in kept:
            scaled = np.asarray(kept["dictionaries"], np.float64) * np.sqrt(new / old)[:, :, None]
            out["dictionaries"] = (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)
        return out


def state_power_spectra(marginals: np.ndarray, power: np.ndarray) -> np.ndarray:
    """Each state's mean power spectrum ``(N, F)`` on the training audio: the STFT power ``(T, F)``
    averaged with the trained one-chain HMM's posterior state probabilities ``(T, N)`` on the same
    frames (the complex-Gaussian M-step with the states held fixed). A state no frame visits gets
    the mean spectrum; every value is floored at 1e-6 of the mean power (Wiener gains divide).
    """
    weight = marginals.sum(axis=0)  # (N,)
    mean = power.mean(axis=0)
    psd = (marginals.T @ power) / np.maximum(weight, 1e-12)[:, None]
    psd[weight < 1e-6] = mean
    return np.maximum(psd, 1e-6 * float(mean.mean()) + 1e-20).astype(np.float32)
