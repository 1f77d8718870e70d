"""A trained FHMM separator as a short pipeline: model frames -> posterior -> masks -> inverse STFT.

The source HMMs become the chains of a factorial HMM; the posterior over the mixture's joint
states (exact, or structured mean field where the planner says so and the emission has it), with
the frames' log-likelihoods scaled by ``options.evidence_scale``, makes each source's mask
(``masks``), and the masked mixture STFT is inverted with the mixture's phase. An ensemble
(``n_models`` sets of source models) averages its sets' masks, each set's pipeline on a thread of
its own (``runtime.run_each``).

Every JAX step after the STFT runs on frames padded at the end to a ``runtime.frame_bucket``
size, so that a mixture of a new length reuses the kernels compiled (in this process, or in an
earlier one through the persistent compilation cache) for any other length in its bucket. The
padded frames observe nothing (``posterior``), and they are dropped before the masks leave JAX.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Optional, Union

import jax.numpy as jnp
import numpy as np

from fhmm_ppl import hmm
from fhmm_ppl.audio.features import stft
from fhmm_ppl.runtime import numpy_blas_on_one_thread, padded, run_each
from fhmm_ppl.separation.adaptation import Adaptation, adapt_models, check_adaptable
from fhmm_ppl.separation.averaging import CEILINGS, PowerAverage, check_averaged, source_indices
from fhmm_ppl.separation.emissions import get_emission
from fhmm_ppl.separation.inputs import checked_mixture, stream_chunk
from fhmm_ppl.separation.level import recording_level, scaled_members, source_levels
from fhmm_ppl.separation.masks import Mixture, binary, choose, wiener_shares
from fhmm_ppl.separation.options import SeparatorOptions
from fhmm_ppl.separation.phase import check_phased, waveforms
from fhmm_ppl.separation.posterior import TYPICAL_FRAMES, ModelSet, clean_source_posterior, infer, plan, scaled_log_lik
from fhmm_ppl.separation.reconstruction import FACTORS
from fhmm_ppl.separation.refinement import check_refined, refine_models
from fhmm_ppl.separation.resolution import FINE, LINES_FILE, LineResolved
from fhmm_ppl.separation.state_nmf import warped_rows
from fhmm_ppl.separation.storage import SourceModel, read, write
from fhmm_ppl.separation.streaming import fitted_stream, lag_frames, stream
from fhmm_ppl.separation.warps import warp_factors


class Separator:
    """A trained separator: ``separate(mixture) -> {name: estimate}``; ``save`` / ``load``.

    Args:
        models: one ``{name: SourceModel}`` mapping, or a sequence of them (an ensemble) with the
            same sources in the same order.
        sample_rate: Hz; options: ``SeparatorOptions``.
        training_history: ``{name: (n_iter,)}`` training objective per source (the first model set's).
        adaptation: for a semi-supervised separator, the sources learnt on each mixture
            (``separation.adaptation``); until ``adapt`` has fitted them, the model sets hold the
            known sources only and ``separate`` adapts first.
    """

    def __init__(self, models, sample_rate: int, options: SeparatorOptions = SeparatorOptions(),
                 training_history: Optional[Mapping[str, np.ndarray]] = None,
                 adaptation: Optional[Adaptation] = None) -> None:
        members = [models] if isinstance(models, Mapping) else list(models)
        if not members:
            raise ValueError("a separator needs at least one set of source models")
        names = list(members[0])
        for member in members[1:]:
            if list(member) != names:
                raise ValueError(f"every model set must have the sources {names} in that order, got {list(member)}")
        self.members = [dict(m) for m in members]
        self.models = self.members[0]
        self.sample_rate = int(sample_rate)
        self.options = options
        self.training_history = dict(training_history or {})
        self.emission = get_emission(options.model.emission)(options.features, self.sample_rate)
        self.adaptation = adaptation
        inference = options.inference
        #: the pitch warps of the dictionary masks and the sources they warp (``separation.warps``)
        self.warping = (tuple(float(a) for a in warp_factors(inference.pitch_shifts)) if inference.pitch_shifts else (),
                        tuple(k for k, name in enumerate(self.names) if name not in inference.noise_sources))
        self.mask = choose(options.soft_mask, options.dictionary_size, inference.dictionary_states, *self.warping)
        if adaptation is not None:
            check_adaptable(self.emission.name, [n for n in names if n not in adaptation.unknown], adaptation)
        check_refined(self.options, self.names)
        check_averaged(self.options, self.names)
        check_phased(self.options, self.names)
        #: the adaptation objective per EM iteration (first model set), where ``adapt`` made this separator
        self.adaptation_objective: Optional[np.ndarray] = None
        #: the refinement objective before each EM iteration (first model set), where ``refine`` made this separator
        self.refinement_objective: Optional[np.ndarray] = None
        #: the level ``refine`` scaled the spectra by, dB against the training audio (``separation.level``),
        #: where it matched one
        self.recording_level: Optional[float] = None
        #: each source's own level (dB) that ``refine`` read (``reads_source_levels``), or None
        self.source_levels: Optional[dict] = None
        self.sets = [] if self.pending else [self._model_set(m) for m in self.members]

    @property
    def pending(self) -> bool:
        """Whether unknown sources wait for a mixture to be learnt on (``adapt``)."""
        return self.adaptation is not None and any(n not in self.models for n in self.adaptation.unknown)

    def _model_set(self, member: Mapping[str, SourceModel]) -> ModelSet:
        """One set of source models as device arrays, with what every exact separation reuses
        (the log-likelihood's mixture-independent part, Wiener shares), made where a typical
        mixture's plan is exact: they are as large as the joint state space."""
        sources = list(member.values())
        params = self.emission.stack([s.emission for s in sources])
        dictionaries = (tuple(jnp.asarray(s.emission["dictionaries"], jnp.float32) for s in sources)
                        if self.options.dictionary_size else None)
        n_states = tuple(int(s.init.shape[0]) for s in sources)
        exact = hmm.plan_inference(n_states, TYPICAL_FRAMES, method=self.options.inference.method).method == "exact"
        warps, warped = self.warping
        factors = tuple(s.emission.get(FACTORS) for s in sources) if dictionaries else ()
        return ModelSet(tuple(jnp.log(jnp.asarray(s.init, jnp.float32)) for s in sources),
                        tuple(jnp.log(jnp.asarray(s.trans, jnp.float32)) for s in sources), params,
                        self.emission.prepare(params, self.options.evidence_scale) if exact else None,
                        wiener_shares(params.psd) if exact and self.mask.shares else None, dictionaries,
                        warped_rows(dictionaries, warps, warped) if dictionaries and warps and warped else None,
                        factors if any(f is not None for f in factors) else None)

    @property
    def refined_sources(self) -> list[str]:
        """The trained sources ``refine`` re-estimates on a mixture (``inference.refine`` that this
        separator has, unless ``refine_iter`` resolves to 0)."""
        unknown = self.adaptation.unknown if self.adaptation is not None else ()
        wanted = set(self.options.inference.refine) if self.options.refine_iter else set()
        return [name for name in self.models if name in wanted and name not in unknown]

    @property
    def names(self) -> list[str]:
        unknown = self.adaptation.unknown if self.adaptation is not None else ()
        return list(self.models) + [n for n in unknown if n not in self.models]

    def _mixture(self, mixture_stft: np.ndarray, magnitude: bool = False) -> Mixture:
        """The mixture's model frames (and, where the masks or ``magnitude`` ask, STFT magnitudes),
        padded to a ``runtime.frame_bucket`` size (``runtime.padded``)."""
        frames = jnp.asarray(padded(self.emission.frames(mixture_stft)))
        wanted = magnitude or self.mask.magnitude
        return Mixture(frames, jnp.asarray(padded(np.abs(mixture_stft).astype(np.float32))) if wanted else None)

    def _plan(self, n_frames: int):
        if self.pending:
            raise ValueError(f"the unknown source(s) {list(self.adaptation.unknown)} are not learnt yet: call "
                             "adapt(mixture) first (separate(mixture) does)")
        return plan(self.emission, self.sets[0].n_states, n_frames, self.options.inference.method)

    @numpy_blas_on_one_thread()
    def gains(self, mixture_stft: np.ndarray) -> np.ndarray:
        """Masks ``(K, T, F)`` for a mixture STFT ``(T, F)``, averaged over the model sets."""
        per_set = self.per_set(mixture_stft, lambda *args: np.asarray(self.mask.make(*args)))
        return self._finish(per_set, mixture_stft.shape[0], mixture_stft, self.power_average())

    def per_set(self, mixture_stft: np.ndarray, make) -> list:
        """``make(posterior, models, mixture, emission)`` (``masks``) for each model set on a mixture STFT
        ``(T, F)``, its frames padded (``runtime.padded``)."""
        n_frames = mixture_stft.shape[0]
        mixture = self._mixture(mixture_stft)
        method = self._plan(mixture.frames.shape[0]).method
        scale = self.options.evidence_scale
        return run_each(lambda models: make(infer(models, self.emission, mixture.frames, scale, method, self.mask.form,
                                                  n_frames), models, mixture, self.emission), self.sets)

    @numpy_blas_on_one_thread()
    def state_oracle_gains(self, mixture_stft: np.ndarray, source_stfts) -> np.ndarray:
        """Masks ``(K, T, F)`` made as ``gains`` makes them, from the states each source model finds in
        that source's own clean STFT (K arrays ``(T, F)``, in ``names`` order) instead of the states
        inferred on the mixture: a diagnostic, like oracle masks, of what inference on the mixture loses.
        """
        if len(source_stfts) != len(self.models):
            raise ValueError(f"need one source STFT per source ({len(self.models)}), got {len(source_stfts)}")
        for name, spec in zip(self.names, source_stfts):
            if np.shape(spec) != np.shape(mixture_stft):
                raise ValueError(f"source {name!r}: STFT shape {np.shape(spec)} differs from the mixture's "
                                 f"{np.shape(mixture_stft)}")
        n_frames = mixture_stft.shape[0]
        mixture = self._mixture(mixture_stft, magnitude=True)
        chosen = self._plan(mixture.frames.shape[0])
        if chosen.method != "exact":
            raise ValueError(f"state oracle masks need the joint state space, which is too large here ({chosen.reason})")
        own = [jnp.asarray(padded(self.emission.frames(np.asarray(spec)))) for spec in source_stfts]
        scale = self.options.evidence_scale
        per_set = [self.mask.make(clean_source_posterior(models, self.emission, own, scale, n_frames), models, mixture,
                                  self.emission) for models in self.sets]
        return self._finish(per_set, n_frames, mixture_stft, self.power_average())

    def power_average(self) -> PowerAverage:
        """A running average, from a mixture's first frame, of the power the masks give the
        ``inference.average`` sources (``separation.averaging``), with the ceilings they keep."""
        inference = self.options.inference
        chosen = source_indices(inference.average, self.names)
        kept = [self.models.get(self.names[k]) for k in chosen]
        return PowerAverage(chosen, self.options.tracked_frames(self.sample_rate), inference.average_rule,
                            [None if m is None else m.emission.get(CEILINGS) for m in kept])

    def _finish(self, per_set: list, n_frames: int, mixture_stft: np.ndarray, average: PowerAverage) -> np.ndarray:
        """The sets' masks ``(K, T_padded, F)`` cut to the ``n_frames`` real frames and averaged
        (writable), the ``average`` sources' power averaged over time for the mixture's STFT
        ``(n_frames, F)``, made binary where the options say so."""
        per_set = [np.asarray(masks)[:, :n_frames] for masks in per_set]
        gains = np.array(per_set[0]) if len(per_set) == 1 else np.mean(per_set, axis=0)
        gains = average(gains, mixture_stft)
        return binary(gains) if self.options.inference.mask == "binary" else gains

    @numpy_blas_on_one_thread()
    def state_posteriors(self, mixture_stft: np.ndarray) -> dict[str, np.ndarray]:
        """Each source's posterior state marginals ``{name: (T, N_k)}`` on a mixture STFT ``(T, F)``
        (of the first model set: state numbers mean nothing across sets)."""
        models = self.sets[0]
        n_frames = mixture_stft.shape[0]
        frames = jnp.asarray(padded(self.emission.frames(mixture_stft)))
        method = self._plan(frames.shape[0]).method
        scale = self.options.evidence_scale
        if method != "exact":
            marginals = infer(models, self.emission, frames, scale, method, "marginals", n_frames).marginals()
        else:
            log_lik = scaled_log_lik(models, self.emission, frames, scale)
            marginals = hmm.posteriors(models.log_init, models.log_trans, log_lik, n_frames).marginals
        return {name: np.asarray(m)[:n_frames] for name, m in zip(self.names, marginals)}

    def choose(self, mixture: np.ndarray) -> "Separator":
        """The separator for ``mixture``: this one (``resolution.LineResolved`` picks an STFT per mixture)."""
        return self

    @numpy_blas_on_one_thread()
    def separate(self, mixture: np.ndarray, *, return_gains: bool = False):
        """Split a mono mixture ``(n_samples,)`` into ``{source name: (n_samples,)}``; with
        ``return_gains`` also return the masks ``(K, T, F)`` (the ``inference.phase_sources``'
        estimates take their masked magnitudes with a phase of their own: ``separation.phase``)."""
        mixture = checked_mixture(mixture, self.options.features.n_fft)
        if self.pending:
            return self.adapt(mixture).separate(mixture, return_gains=return_gains)
        config = self.options.stft
        spec = stft(mixture, config)
        gains = self._refined(spec).gains(spec)
        phased = source_indices(self.options.inference.phase_sources or (), self.names)
        estimates = dict(zip(self.names, waveforms(mixture, spec, gains, config, phased)))
        return (estimates, gains) if return_gains else estimates

    def stream(self, chunks: Iterable, lag: float = 0.1, fit_seconds: float = 0.0,
               live: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Separate a mixture that arrives in chunks: per chunk of ``chunks`` (1-D sample arrays of any
        sizes, empty ones included; float or integer PCM as ``separate`` takes them) yield
        ``{source name: (m,)}``, the samples that became final, then one more with the rest.

        Each frame's posterior is its fixed-lag smoothed one, given the frames up to ``lag`` seconds
        after it (0: causal filtering); with a lag covering the whole stream the concatenated
        pieces are the estimates ``separate`` gives with this separator's spectra, and they always
        have the stream's length. Memory does not grow with the stream (``separation.streaming``).
        Exact inference, or mean field on a window of the lag's frames where the plan is mean field.

        ``fit_seconds``: where positive and the separator fits itself to a recording
        (``fits_recording``), the stream's first seconds are held back, the separator is fitted to them
        (``refine``) and the stream then separated from its start by the fitted one, so its estimates
        start that much later (``fhmm-ppl separate -`` holds 3 s: ``files.PIPE_HEAD``). 0: the spectra
        as they are. ``live``: nothing is held back; the first seconds are separated as trained while
        they come in, and the fitted separator takes over after them (``streaming.handed_over``).
        """
        if fit_seconds:
            return fitted_stream(self, chunks, lag, fit_seconds, live)
        n_lag = lag_frames(lag, self.sample_rate, self.options.stft.hop_length)
        if not self.emission.frame_local:
            raise ValueError(f"the {self.emission.name} emission cannot stream: its model frames depend on the "
                             "whole recording (frame_local is false)")
        return stream(self, chunks, n_lag, self._plan(TYPICAL_FRAMES).method, stream_chunk)

    @numpy_blas_on_one_thread()
    def adapt(self, mixture: np.ndarray) -> "Separator":
        """A separator whose unknown sources' HMMs are learnt on ``mixture (n_samples,)`` by exact
        generalised EM, the known sources' parameters held fixed (``separation.adaptation``; each
        model set adapted on its own), and expressed in this separator's emission. It separates without adapting again, and saves and loads.
        Adapting an adapted separator starts afresh from the known sources."""
        if self.adaptation is None:
            raise ValueError("adapt needs a semi-supervised separator: fit_separator(sources, rate, unknown=[...])")
        mixture = checked_mixture(mixture, self.options.features.n_fft)
        power = np.abs(stft(mixture, self.options.stft)) ** 2
        unknown = self.adaptation.unknown
        results = [adapt_models({n: m for n, m in member.items() if n not in unknown}, power, self.adaptation,
                                self.options.model.unknown_prior_specs(), seed=self.options.seed,
                                emission=self.emission, dictionary_size=self.options.dictionary_size) for member in self.members]
        adapted = Separator([r.models for r in results], self.sample_rate, self.options, self.training_history,
                            self.adaptation)
        adapted.adaptation_objective = results[0].objective
        return adapted

    @property
    def matches_level(self) -> bool:
        """Whether ``refine`` scales every source's spectra to the recording's level
        (``inference.match_level``, ``separation.level``): for supervised separators whose emission
        takes scaled spectra (a semi-supervised one learns its unknown sources at the mixture's level)."""
        return self.options.inference.match_level and self.adaptation is None and self.emission.refinable

    @property
    def reads_source_levels(self) -> bool:
        """Whether ``refine`` gives each source not refined a level of its own, read off a first
        separation (``inference.source_levels``, ``level.source_levels``), where ``matches_level`` could."""
        return self.options.inference.source_levels and self.adaptation is None and self.emission.refinable

    @property
    def fits_recording(self) -> bool:
        """Whether ``refine`` fits anything to a recording: its level (``matches_level``), its sources'
        levels (``reads_source_levels``) or the spectra of ``refined_sources``."""
        return bool(self.refined_sources) or self.matches_level or self.reads_source_levels

    @numpy_blas_on_one_thread()
    def refine(self, mixture: np.ndarray) -> "Separator":
        """This separator fitted to ``mixture (n_samples,)``: every source's spectra scaled to the
        recording's level (``matches_level``), then the state
        spectra of ``refined_sources`` re-estimated on it (``separation.refinement``; each model set on
        its own), the other sources held fixed. The result does not fit again (``inference.refine_iter``
        0, ``match_level`` false): it separates, streams and saves as fitted to this recording.
        ``separate`` fits first where ``fits_recording``; ``stream`` fits to the stream's first
        ``fit_seconds`` where asked (the CLI does: ``separation.files``)."""
        if self.pending:
            return self.adapt(mixture).refine(mixture)
        if not self.fits_recording:
            return self
        return self._refined(stft(checked_mixture(mixture, self.options.features.n_fft), self.options.stft))

    def _refined(self, mixture_stft: np.ndarray) -> "Separator":
        """``refine`` on the mixture's STFT ``(T, F)``."""
        if not self.fits_recording:
            return self
        inference = self.options.inference
        power = np.abs(mixture_stft) ** 2
        members, level, objective = self.members, None, None
        if self.matches_level:
            level = recording_level(members, power)
            members = members if level is None else scaled_members(members, self.emission, level)
        chosen = self.refined_sources
        if chosen:
            members, objective = refine_models(members, chosen, power, self.emission, inference.refine_strength,
                                               self.options.refine_iter, inference.refine_stride)
        fitted = self.options.replace(refine_iter=0, match_level=False, source_levels=False)
        own = None
        if self.reads_source_levels:  # the refined sources have their own level already
            first = Separator(members, self.sample_rate, fitted, self.training_history)
            own = source_levels(members, first.gains(mixture_stft), power, self.names, skip=chosen)
            members = scaled_members(members, self.emission, own)
        refined = Separator(members, self.sample_rate, fitted, self.training_history, self.adaptation)
        refined.adaptation_objective = self.adaptation_objective
        refined.refinement_objective = None if objective is None else objective[0]
        refined.recording_level, refined.source_levels = level, own
        return refined

    def with_refinement(self, n_iter: int, sources=None) -> "Separator":
        """This separator refining ``sources`` (a name or names; default: ``inference.refine`` as it
        is) in ``n_iter`` EM iterations on each mixture (0: the spectra as trained)."""
        flat = {"refine_iter": n_iter}
        if sources is not None:
            flat["refine"] = [sources] if isinstance(sources, str) else list(sources)
        return self._with_options(**flat)

    def with_average(self, seconds: float) -> "Separator":
        """This separator averaging the ``inference.average`` sources' power over ``seconds`` in its
        masks (0: frame by frame; ``separation.averaging``)."""
        return self._with_options(average_seconds=seconds)

    def with_level_matching(self, on: bool) -> "Separator":
        """This separator scaling its spectra to each recording's level, or not (``inference.match_level``;
        ``separation.level``)."""
        return self._with_options(match_level=bool(on))

    def with_source_levels(self, on: bool) -> "Separator":
        """This separator giving each source not refined a level of its own on each recording, or not
        (``inference.source_levels``; ``separation.level``)."""
        return self._with_options(source_levels=bool(on))

    def with_phase_sources(self, sources) -> "Separator":
        """This separator giving the estimates of ``sources`` (names; ``[]``: none) a phase of their own
        (``inference.phase_sources``; ``separation.phase``)."""
        return self._with_options(phase_sources=list(sources))

    def _with_options(self, **flat) -> "Separator":
        """This separator's models with its options changed by the flat keywords ``flat``."""
        return Separator(self.members, self.sample_rate, self.options.replace(**flat), self.training_history,
                         self.adaptation)

    def with_unknown(self, unknown) -> "Separator":
        """This separator with the sources named in ``unknown`` forgotten and learnt on each mixture
        instead (semi-supervised: their trained HMMs do not fit the recording's, e.g. another room's
        noise); ``model.unknown_states`` states each, as the options say."""
        unknown = [unknown] if isinstance(unknown, str) else list(unknown)
        missing = [name for name in unknown if name not in self.models]
        if missing:
            raise ValueError(f"no source {missing} in this separator; its sources: {', '.join(self.models)}")
        options = self.options.replace(unknown=unknown)
        members = [{n: m for n, m in member.items() if n not in unknown} for member in self.members]
        adaptation = Adaptation(tuple(unknown), options.model.unknown_states, options.training.adapt_iter)
        history = {n: h for n, h in self.training_history.items() if n not in unknown}
        return Separator(members, self.sample_rate, options, history, adaptation)

    def save(self, folder: Union[str, Path]) -> Path:
        """Write the separator into ``folder`` (``separation.storage``)."""
        adaptation = None if self.adaptation is None else self.adaptation.to_json()
        shutil.rmtree(Path(folder) / FINE, ignore_errors=True)  # a finer separator saved here before is not this one's
        return write(folder, self.members, self.sample_rate, self.options, adaptation)


def load(folder: Union[str, Path]):
    """Load a separator written by ``Separator.save`` (older formats included) or by
    ``resolution.LineResolved.save`` (a finer separator in ``folder/fine``)."""
    members, sample_rate, options, adaptation = read(folder)
    separator = Separator(members, sample_rate, options,
                          adaptation=None if adaptation is None else Adaptation.from_json(adaptation))
    fine = Path(folder) / FINE
    if (fine / LINES_FILE).exists():
        return LineResolved(separator, load(fine), np.load(fine / LINES_FILE))
    return separator
