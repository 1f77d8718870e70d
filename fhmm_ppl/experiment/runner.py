"""Running one experiment end to end, tracked in MLflow.

YAML config -> data -> per-source HMMs -> FHMM separation of each test mixture
-> metrics for the FHMM, the baselines and the oracle -> MLflow (params, step
metrics, final metrics, audio, plots, the trained separator). The runner is the
only layer that knows about MLflow; a failure marks the run FAILED, an
interruption (Ctrl-C, SIGTERM) KILLED, with the traceback saved as ``error.txt``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import mlflow
import numpy as np
import yaml
from mlflow.tracking import MlflowClient

from fhmm_ppl.audio.features import STFTConfig, stft
from fhmm_ppl.audio.io import write_audio
from fhmm_ppl.experiment import plots, streamed
from fhmm_ppl.experiment.classify import run_classification
from fhmm_ppl.experiment.config import ExperimentConfig
from fhmm_ppl.experiment.data import fingerprint, load_task
from fhmm_ppl.experiment.prepare import prepare
from fhmm_ppl.experiment.provenance import run_tags
from fhmm_ppl.experiment.pyfunc import log_separator_model
from fhmm_ppl.experiment.tracking import open_experiment, tracked_run, tracking_uri
from fhmm_ppl.metrics import separation_report
from fhmm_ppl.runtime import enable_compilation_cache, release_compiled_programs_if_crowded
from fhmm_ppl.separation import SeparatorOptions, fit_separator
from fhmm_ppl.separation.baselines import apply_masks, fit_semi_supervised_nmf, fit_supervised_nmf, oracle_masks
from fhmm_ppl.separation.training import state_counts

METRICS = ("sdr", "sir", "sar", "si_sdr", "snr", "sdr_improvement", "si_sdr_improvement")


@dataclass
class RunResult:
    """What a finished run reports back.

    Attributes:
        run_id, experiment_id, tracking_uri: where the run lives in MLflow.
        scores: separation: ``{method: {source: {metric: value}}}`` averaged over
            test mixtures; classification: the classification report.
        metrics: every final metric logged, by its MLflow name.
        status: the run's MLflow status (``FINISHED``, ``FAILED``, ``KILLED``), or ``PRUNED`` for a
            search trial stopped after training (its MLflow run is ``FINISHED``, tagged ``fhmm_ppl.pruned``).
        error: one line saying why, when the run did not finish.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    scores: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    status: str = "FINISHED"
    error: str = ""


def _score_all(task, known: dict, separator, config: ExperimentConfig, progress) -> tuple[dict, list, dict]:
    """Scores per method, source and metric (mean over mixtures), the per-mixture outputs, and the
    streaming metrics at ``evaluation.stream_lags`` (``experiment.streamed``; empty without lags).
    ``known``: the training audio of the sources trained (all but ``model.unknown``)."""
    names = separator.names
    stft_config = STFTConfig(config.features.n_fft, config.features.hop_length)
    unknown = config.model.unknown
    nmf = None
    if "nmf" in config.evaluation.baselines:  # semi-supervised NMF beside a semi-supervised FHMM
        nmf = (fit_semi_supervised_nmf(known, unknown, config.evaluation.nmf_components, config=stft_config, seed=config.seed)
               if unknown else fit_supervised_nmf(known, config.evaluation.nmf_components, stft_config, config.seed))
    collected: dict = {}
    outputs, streams = [], []
    for index, (mixture, references) in enumerate(progress(list(zip(task.mixtures, task.references)), "separating")):
        refs = np.stack([references[n] for n in names])
        current = separator
        if unknown:  # learn the unknown sources on this mixture; its objective per EM iteration
            current = separator.adapt(mixture)
            for step, value in enumerate(np.asarray(current.adaptation_objective)):
                mlflow.log_metric(f"adapt.mixture{index:02d}.objective", float(value), step=step)
        current = current.choose(mixture)  # the finer STFT where the mixture shows a trained hum's lines
        if current.fits_recording:  # level and spectra fitted to this mixture (the lags below stream this separator)
            current = current.refine(mixture)
            if current.recording_level is not None:
                mlflow.log_metric(f"level.mixture{index:02d}", current.recording_level)
            for name, level in (current.source_levels or {}).items():
                mlflow.log_metric(f"level.mixture{index:02d}.{name}", level)
            if current.refinement_objective is not None:
                for step, value in enumerate(np.asarray(current.refinement_objective)):
                    mlflow.log_metric(f"refine.mixture{index:02d}.objective", float(value), step=step)
        fhmm, gains = current.separate(mixture, return_gains=True)
        if config.evaluation.stream_lags:
            streams.append(streamed.score_lags(current, mixture, refs, config.evaluation.stream_lags,
                                               config.evaluation.stream_chunk))
        estimates = {"fhmm": fhmm, "mixture": {n: mixture for n in names}}
        if nmf is not None:
            estimates["nmf"] = nmf.separate(mixture)
        for kind in ("irm", "ibm"):
            if kind in config.evaluation.baselines:
                est = apply_masks(mixture, oracle_masks(refs, mixture, stft_config, kind), stft_config)
                estimates[kind] = dict(zip(names, est))
        for method, est in estimates.items():
            report = separation_report(refs, np.stack([est[n] for n in names]), mixture)
            for k, name in enumerate(names):
                for metric in METRICS:
                    collected.setdefault(method, {}).setdefault(name, {}).setdefault(metric, []).append(float(report[metric][k]))
        outputs.append({"mixture": mixture, "references": references, "estimates": fhmm, "gains": gains,
                        "states": current.state_posteriors(stft(mixture, current.options.stft)),
                        "hop_length": current.options.features.hop_length})
    scores = {m: {n: {k: float(np.mean(v)) for k, v in per.items()} for n, per in src.items()} for m, src in collected.items()}
    stream_metrics = streamed.metrics(streams, [m.shape[0] / task.sample_rate for m in task.mixtures]) if streams else {}
    return scores, outputs, stream_metrics


def _log_artifacts(config, task, separator, outputs, workdir: Path) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    mlflow.log_artifact(str(workdir / "config.yaml"))
    rate = task.sample_rate
    for index, out in enumerate(outputs):
        folder = workdir / "audio" / f"mixture{index:02d}"
        write_audio(folder / "mixture.wav", out["mixture"], rate)
        for name, wave in out["estimates"].items():
            write_audio(folder / f"{name}_estimate.wav", wave, rate)
            write_audio(folder / f"{name}_reference.wav", out["references"][name], rate)
        mlflow.log_artifacts(str(folder), f"audio/mixture{index:02d}")
        signals = {"mixture": out["mixture"]}
        for name in out["estimates"]:
            signals[f"{name} (reference)"] = out["references"][name]
            signals[f"{name} (FHMM estimate)"] = out["estimates"][name]
        plot_dir = workdir / "plots"
        plot_dir.mkdir(exist_ok=True)
        mlflow.log_artifact(str(plots.spectrograms(plot_dir / f"spectrograms_mixture{index:02d}.png", signals, rate,
                                                   config.features.n_fft, config.features.hop_length)), "plots")
        mlflow.log_artifact(str(plots.masks(plot_dir / f"masks_mixture{index:02d}.png", out["gains"], list(out["estimates"]),
                                            rate, out["hop_length"])), "plots")
        mlflow.log_artifact(str(plots.state_posteriors(plot_dir / f"states_mixture{index:02d}.png", out["states"], rate,
                                                       out["hop_length"])), "plots")
    if separator.training_history:
        mlflow.log_artifact(str(plots.training_curves(workdir / "plots" / "training.png", separator.training_history)), "plots")
    saved = separator.save(workdir / "model")
    mlflow.log_artifacts(str(saved), "model")
    uri = log_separator_model(saved)
    mlflow.set_tag("fhmm_ppl.model_uri", uri)


def training_curve(history: dict) -> np.ndarray:
    """``(n_iter,)`` the mean over sources of the per-frame training objective at each iteration
    (what a search prunes on; sources trained for fewer iterations shorten it)."""
    curves = [np.asarray(v, dtype=float) for v in history.values() if len(v)]
    if not curves:
        return np.zeros(0)
    n = min(len(c) for c in curves)
    return np.mean([c[:n] for c in curves], axis=0)


def _separation(config: ExperimentConfig, progress, on_status, workdir: Path,
                after_training: Optional[Callable[[np.ndarray], bool]] = None, show_training: bool = True) -> tuple[dict, dict]:
    """Train, separate, score and log a separation experiment; returns (scores, flat final metrics).

    ``after_training(curve)`` (a search's pruner) sees the training curve; when it answers True the
    run stops there, tagged ``fhmm_ppl.pruned``, and the returned scores are empty."""
    task = load_task(config)
    mlflow.set_tags(run_tags(fingerprint(task)))
    missing = [name for name in config.model.unknown if name not in task.references[0]]
    if missing:
        raise ValueError(f"model.unknown names {missing}, which the task does not have; its sources: "
                         f"{', '.join(task.references[0])}")
    known = {name: audio for name, audio in task.train.items() if name not in config.model.unknown}
    sets = f", {config.training.n_models} sets" if config.training.n_models > 1 else ""
    states = state_counts(known, task.sample_rate, config.model.n_states)
    mlflow.log_params({f"states.{name}": n for name, n in states.items()})  # what model.n_states resolved to
    counts = ", ".join(f"{name} {n}" for name, n in states.items())
    on_status(f"training {len(known)} source models ({config.model.emission}, states: {counts}, {config.training.method}{sets})")
    options = SeparatorOptions(features=config.features, model=config.model, training=config.training,
                               inference=config.inference, seed=config.seed)
    separator = fit_separator(known, task.sample_rate, options, progress=show_training)
    mlflow.log_param("pitch_shifts", separator.options.inference.pitch_shifts)  # what inference.pitch_shifts resolved to
    mlflow.log_param("phase_sources", ",".join(separator.options.inference.phase_sources or ()) or "none")
    for name, values in separator.training_history.items():
        for step, value in enumerate(np.asarray(values)):
            mlflow.log_metric(f"train.{name}.objective", float(value), step=step)
    if after_training is not None and after_training(training_curve(separator.training_history)):
        mlflow.set_tag("fhmm_ppl.pruned", "true")
        on_status("pruned after training: its training curve is behind earlier trials'")
        return {}, {}
    scores, outputs, stream_metrics = _score_all(task, known, separator, config, progress)
    flat = {}
    for method, per_source in scores.items():
        for name, metrics in per_source.items():
            flat.update({f"{method}.{name}.{k}": v for k, v in metrics.items()})
        flat.update({f"{method}.mean.{k}": float(np.mean([m[k] for m in per_source.values()])) for k in METRICS})
    mlflow.log_metrics(flat)
    if stream_metrics:
        mlflow.log_metrics(stream_metrics)
        lags = config.evaluation.stream_lags
        for lag in lags:
            mlflow.log_metric("stream.sdr_improvement", stream_metrics[streamed.metric_name(lag, "sdr_improvement")],
                              step=round(lag * 1000))
        (workdir / "plots").mkdir(exist_ok=True)
        mlflow.log_artifact(str(streamed.plot(workdir / "plots" / "streaming.png", lags, stream_metrics,
                                              flat["fhmm.mean.sdr_improvement"])), "plots")
        flat.update(stream_metrics)
    _log_artifacts(config, task, separator, outputs, workdir)
    return scores, flat


def run_experiment(config: ExperimentConfig, *, progress: Optional[Callable] = None,
                   on_status: Callable[[str], None] = lambda message: None, nested: bool = False,
                   run_name: Optional[str] = None, run_id: Optional[str] = None,
                   after_training: Optional[Callable[[np.ndarray], bool]] = None, show_training: bool = True) -> RunResult:
    """Run one experiment (separation or classification) and track it in MLflow.

    Args:
        config: a validated experiment.
        progress: wraps an iterable with a progress display, as ``progress(items, description)``.
        on_status: receives short status lines (e.g. to print them).
        nested: start the run as a child of the active run.
        run_name: overrides ``tracking.run_name``.
        run_id: carry on an existing run instead of starting one (a sweep's driver creates each
            child run, an executor runs it, perhaps in another process or on another machine).
        after_training: a search's pruner (see ``_separation``); separation only.
        show_training: progress bars while training (off in sweep workers, whose output is not a terminal).

    Returns:
        ``RunResult``; raises ``ConfigError`` before any run is created when ``prepare`` finds a
        problem, and whatever else failed after marking the run FAILED.
    """
    prepare(config)
    progress = progress or (lambda items, description: items)
    enable_compilation_cache()
    release_compiled_programs_if_crowded()  # a sweep's many points in one process
    uri = tracking_uri(config.tracking.uri)
    mlflow.set_tracking_uri(uri)
    if run_id is not None:
        exp_id = MlflowClient(uri).get_run(run_id).info.experiment_id
        started = tracked_run(run_id=run_id, nested=mlflow.active_run() is not None)
    else:
        _, exp_id = open_experiment(uri, config.tracking.experiment or config.name)
        started = tracked_run(experiment_id=exp_id, run_name=run_name or config.tracking.run_name, nested=nested)
    with started as run:
        run_id = run.info.run_id
        on_status(f"MLflow run {run_id} (experiment {config.tracking.experiment or config.name!r}) at {uri}")
        mlflow.log_params(config.flat())
        mlflow.set_tag("fhmm_ppl.task", config.task)
        with tempfile.TemporaryDirectory() as tmp:
            if config.task == "classification":
                scores, flat = run_classification(config, progress, on_status, Path(tmp))
            else:
                scores, flat = _separation(config, progress, on_status, Path(tmp), after_training, show_training)
    if after_training is not None and not scores:
        return RunResult(run_id, exp_id, uri, status="PRUNED", error="pruned after training")
    return RunResult(run_id, exp_id, uri, scores, flat)
