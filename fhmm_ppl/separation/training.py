"""Training a separator: one HMM per named source on its solo audio (``fhmm_ppl.train.fit``).

Each source's audio becomes the emission's model frames; ``training.n_models`` HMMs per source
from different seeds make an ensemble. After training, each state gets what its masks need
(``Emission.source_params``: its power spectrum on the training audio, and an NMF dictionary of
the training frames the HMM assigns to it where the options ask for state dictionaries).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import numpy as np

from fhmm_ppl.audio.features import stft
from fhmm_ppl.models import make_family
from fhmm_ppl.models.fhmm import make_spec
from fhmm_ppl.runtime import release_compiled_programs_if_crowded
from fhmm_ppl.separation.adaptation import Adaptation, check_adaptable
from fhmm_ppl.separation.averaging import CEILINGS, check_averaged, level_ceilings
from fhmm_ppl.separation.emissions import get_emission
from fhmm_ppl.separation.inputs import as_float_audio
from fhmm_ppl.separation.options import SeparatorOptions
from fhmm_ppl.separation.phase import check_phased
from fhmm_ppl.separation.posterior import TYPICAL_FRAMES, plan
from fhmm_ppl.separation.reconstruction import learns, learnt_factors, repeats
from fhmm_ppl.separation.refinement import check_refined
from fhmm_ppl.separation.resolution import LineResolved, fine_options, line_sources, tonal_lines
from fhmm_ppl.separation.separator import Separator
from fhmm_ppl.separation.source_models import keep
from fhmm_ppl.separation.warps import auto_shifts
from fhmm_ppl.settings import AVERAGE_SECONDS, REPEATING_AVERAGE_SECONDS
from fhmm_ppl.train import fit

#: States per second of a source's training audio when ``model.n_states`` is ``None`` (rounded to a
#: multiple of ``STATE_STEP`` within ``MIN_STATES``..``MAX_STATES``). Chosen on real speech: with
#: about 6 s of training speech 16 states and 32 separate alike (9.20 and 9.12 dB), with 13 s
#: 32 states beat 16 by 0.5 dB; at 32 two sources separate a 10 s mixture at a real-time factor of
#: about 0.045, within the 0.05 budget (docs/benchmarks.md).
STATES_PER_SECOND = 2.5
STATE_STEP = 8
MIN_STATES = 8
MAX_STATES = 32


def states_for(seconds: float) -> int:
    """The states of a source HMM trained on ``seconds`` of audio when ``model.n_states`` is ``None``:
    about one per 0.4 s, a multiple of ``STATE_STEP`` from ``MIN_STATES`` to ``MAX_STATES``."""
    return int(np.clip(STATE_STEP * round(STATES_PER_SECOND * seconds / STATE_STEP), MIN_STATES, MAX_STATES))


def state_counts(sources: Mapping[str, np.ndarray], sample_rate: int, n_states: Optional[int] = None) -> dict[str, int]:
    """Each source's states: ``n_states`` (``model.n_states``) where given, else ``states_for`` its
    seconds of training audio ``sources[name] (n_samples,)``."""
    return {name: n_states or states_for(_seconds(audio, sample_rate)) for name, audio in sources.items()}


def fit_separator(sources: Mapping[str, np.ndarray], sample_rate: int, options: Optional[SeparatorOptions] = None, *,
                  progress: bool = False, **flat) -> Separator:
    """Train one HMM per named source on its solo audio (semi-supervised: and name the sources
    to be learnt on each mixture).

    Args:
        sources: ``{name: (n_samples,)}`` training audio per source (mono, ``sample_rate``).
        sample_rate: Hz.
        options: ``SeparatorOptions`` (default: the defaults). ``model.unknown`` (flat: ``unknown=["noise"]``)
            names sources with no training audio, learnt on each mixture by ``Separator.adapt``
            (``separation.adaptation``), with ``model.unknown_states`` states
            and ``training.adapt_iter`` EM iterations; they come after ``sources``.
        progress: show progress bars.
        **flat: options as flat keywords (``separation.options.FLAT_KEYS``: ``n_states=32``,
            ``emission="complex_gaussian"``, ``trainer="svi"``, ...), applied over ``options``.

    Returns:
        ``Separator``; where a noise source's (``inference.refine``, ``inference.average``) training
        audio is mostly steady spectral lines (mains hum)
        and ``features.line_n_fft`` is above ``n_fft``, a ``resolution.LineResolved`` pair that
        separates mixtures showing those lines at the finer STFT.
    """
    opts = SeparatorOptions.from_flat(options, **flat) if flat or options is None else options
    if not isinstance(sources, Mapping):
        raise ValueError(f"sources must map each source's name to its training audio, got {type(sources).__name__}")
    unknown, unknown_states = tuple(opts.model.unknown), opts.model.unknown_states
    adaptation = Adaptation(unknown, unknown_states, opts.training.adapt_iter) if unknown else None
    if adaptation is not None:
        check_adaptable(opts.model.emission, list(sources), adaptation)
    if len(sources) + len(unknown) < 2:
        raise ValueError(f"separation needs at least two sources, got {len(sources)}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    emission = get_emission(opts.model.emission)(opts.features, int(sample_rate))
    counts = state_counts(sources, sample_rate, opts.model.n_states)
    chains = tuple(counts.values()) + (int(unknown_states),) * len(unknown)
    chosen = plan(emission, chains, TYPICAL_FRAMES)  # refused before any training
    if adaptation is not None and chosen.method != "exact":
        raise ValueError(f"adapting unknown sources needs exact inference, but the plan here is {chosen.method} "
                         f"({chosen.reason}); use fewer states (n_states, unknown_states) or fewer sources")
    check_refined(opts, list(sources) + list(unknown))  # before training (a clash with unknown is refused above)
    check_averaged(opts, list(sources) + list(unknown))
    check_phased(opts, list(sources) + list(unknown))
    if opts.refine_iter and chosen.method != "exact" and set(opts.inference.refine) & set(sources):
        raise ValueError(f"refining sources on the mixture needs exact inference, but the plan here is {chosen.method} "
                         f"({chosen.reason}); set inference.refine_iter to 0 or use fewer states or sources")
    release_compiled_programs_if_crowded()  # a loop over many separators in one process
    family = make_family(emission.family, **emission.family_options)
    specs = {n: make_spec((n,), family, opts.model.prior_specs()) for n in set(counts.values())}
    prepared = {name: _training_frames(name, audio, emission, opts, sample_rate, counts[name])
                for name, audio in sources.items()}
    members = [{} for _ in range(opts.training.n_models)]
    history = {}
    for name, (frames, power) in prepared.items():
        spec = specs[counts[name]]
        for index, member in enumerate(members):
            first_seed = opts.seed + index * opts.training.n_init
            result = fit([frames], spec, opts.training, seed=first_seed, progress=progress)
            member[name] = keep(result.params, frames, power, spec, emission, opts.dictionary_size, first_seed)
            if index == 0:
                history[name] = result.history
    noises = {n: as_float_audio(a) for n, a in sources.items() if n in opts.inference.noise_sources}
    if opts.inference.pitch_shifts is None:  # steady noise or none: each frame's talkers may take pitch warps
        shifts = auto_shifts(noises, opts.stft, bool(unknown)) if opts.dictionary_size else 0
        opts = opts.model_copy(update={"inference": opts.inference.model_copy(update={"pitch_shifts": shifts})})
    if opts.inference.average_seconds is None:  # a noise that repeats itself: its level held over seconds
        seconds = REPEATING_AVERAGE_SECONDS if repeats(noises, opts.stft) else AVERAGE_SECONDS
        opts = opts.model_copy(update={"inference": opts.inference.model_copy(update={"average_seconds": seconds})})
    if opts.training.level_ceilings:
        members = _with_ceilings(members, {n: power for n, (_, power) in prepared.items()}, opts, sample_rate)
    line_n_fft = opts.features.line_n_fft
    fine = fine_options(opts) if line_n_fft is not None and line_n_fft > opts.features.n_fft else None
    lines_at = opts.stft if fine is None else fine.stft  # where lines stand out from the rest best
    chosen_phase = opts.inference.phase_sources is None
    if chosen_phase:  # mains hum against dictionary fits: a phase of its own
        phased = line_sources(noises, lines_at) if opts.dictionary_size else []
        opts = opts.model_copy(update={"inference": opts.inference.model_copy(update={"phase_sources": phased})})
    learnable = bool(opts.dictionary_size) and adaptation is None  # states with dictionaries, all trained
    if opts.training.reconstruction is None:
        learn = learnable and learns(noises, opts.stft, lines_at)
        opts = opts.model_copy(update={"training": opts.training.model_copy(update={"reconstruction": learn})})
    separator = Separator(members, sample_rate, opts, history, adaptation)
    if opts.training.reconstruction and learnable:
        learnt = [name for name in sources if name not in separator.refined_sources]
        members, _ = learnt_factors(separator, {n: as_float_audio(a) for n, a in sources.items()}, learnt,
                                    progress=progress)
        separator = Separator(members, sample_rate, opts, history, adaptation)
    if adaptation is None and fine is not None:
        if chosen_phase:  # at the finer STFT the lines are resolved: their phase of their own gains nothing
            fine = fine.replace(phase_sources=[])
        lines = tonal_lines(noises, lines_at)  # speech is never steady lines
        if lines is not None:
            return LineResolved(separator, fit_separator(sources, sample_rate, fine, progress=progress), lines)
    return separator


def _with_ceilings(members: list, powers: Mapping[str, np.ndarray], opts: SeparatorOptions, sample_rate: int) -> list:
    """The model sets ``members`` with each tracked noise's ``averaging.level_ceilings`` (``CEILINGS``)
    from its training STFT power (``powers``, ``{name: (T, F)}``), where the presence rule tracks it."""
    frames = opts.tracked_frames(sample_rate)
    if opts.inference.average_rule != "presence" or frames <= 1:
        return members
    for name in opts.inference.average:
        ceilings = level_ceilings(powers[name], frames) if name in powers else None
        if ceilings is not None:
            members = [{**m, name: m[name]._replace(emission={**m[name].emission, CEILINGS: ceilings})} for m in members]
    return members


def _seconds(audio, sample_rate: int) -> float:
    """Seconds of training audio (0 for what is not an array: ``_training_frames`` says what is wrong)."""
    return float(np.shape(audio)[-1]) / sample_rate if np.ndim(audio) >= 1 else 0.0


def _training_frames(name: str, audio, emission, opts: SeparatorOptions, sample_rate: int, n_states: int):
    """A source's model frames ``(T, D)`` and STFT power ``(T, F)``, after checking its audio."""
    audio = as_float_audio(audio)
    n_fft = opts.features.n_fft
    if audio.ndim != 1 or audio.shape[0] < n_fft:
        raise ValueError(f"source {name!r}: need mono audio of at least {n_fft} samples, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"source {name!r}: training audio contains NaN or infinite samples")
    if not np.any(audio):
        raise ValueError(f"source {name!r}: training audio is silent")
    spectrum = stft(audio, opts.stft)
    if spectrum.shape[0] < n_states:
        raise ValueError(f"source {name!r}: {audio.shape[0] / sample_rate:.2f} s of training audio give "
                         f"{spectrum.shape[0]} frames, fewer than the {n_states} states to fit; "
                         "give more audio or fewer states (n_states)")
    return emission.frames(spectrum), np.abs(spectrum) ** 2
