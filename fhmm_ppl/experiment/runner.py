"""Running one experiment end to end, tracked in MLflow.

YAML config -> data -> per-source HMMs -> FHMM separation of each test mixture
-> metrics for the FHMM, the baselines and the oracle -> MLflow (params, step
metrics, final metrics, audio, plots, the trained separator). The runner is the
only layer that knows about MLflow; a failure marks the run FAILED, an
interruption (Ctrl-C, SIGTERM) KILLED, with the traceback saved as ``error.txt``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import mlflow
import numpy as np
import yaml

from fhmm_ppl.audio.features import STFTConfig, stft
from fhmm_ppl.audio.io import write_audio
from fhmm_ppl.experiment import plots
from fhmm_ppl.experiment.classify import run_classification
from fhmm_ppl.experiment.config import ExperimentConfig
from fhmm_ppl.experiment.data import fingerprint, load_task
from fhmm_ppl.experiment.prepare import prepare
from fhmm_ppl.experiment.pyfunc import log_separator_model
from fhmm_ppl.experiment.tracking import open_experiment, run_tags, tracked_run, tracking_uri
from fhmm_ppl.metrics import separation_report
from fhmm_ppl.runtime import enable_compilation_cache
from fhmm_ppl.separation import SeparatorOptions, fit_separator
from fhmm_ppl.separation.baselines import apply_masks, fit_supervised_nmf, oracle_masks

METRICS = ("sdr", "sir", "sar", "si_sdr", "snr", "sdr_improvement", "si_sdr_improvement")


@dataclass
class RunResult:
    """What a finished run reports back.

    Attributes:
        run_id, experiment_id, tracking_uri: where the run lives in MLflow.
        scores: separation: ``{method: {source: {metric: value}}}`` averaged over
            test mixtures; classification: the classification report.
        metrics: every final metric logged, by its MLflow name.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    scores: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def _score_all(task, separator, config: ExperimentConfig, progress) -> tuple[dict, list]:
    """Scores per method, source and metric (mean over mixtures), and the per-mixture outputs."""
    names = list(task.train)
    stft_config = STFTConfig(config.features.n_fft, config.features.hop_length)
    nmf = None
    if "nmf" in config.evaluation.baselines:
        nmf = fit_supervised_nmf(task.train, config.evaluation.nmf_components, stft_config, config.seed)
    collected: dict = {}
    outputs = []
    for index, (mixture, references) in enumerate(progress(list(zip(task.mixtures, task.references)), "separating")):
        refs = np.stack([references[n] for n in names])
        fhmm, gains = separator.separate(mixture, return_gains=True)
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
                        "states": separator.state_posteriors(stft(mixture, stft_config))})
    scores = {m: {n: {k: float(np.mean(v)) for k, v in per.items()} for n, per in src.items()} for m, src in collected.items()}
    return scores, outputs


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
                                            rate, config.features.hop_length)), "plots")
        mlflow.log_artifact(str(plots.state_posteriors(plot_dir / f"states_mixture{index:02d}.png", out["states"], rate,
                                                       config.features.hop_length)), "plots")
    if separator.training_history:
        mlflow.log_artifact(str(plots.training_curves(workdir / "plots" / "training.png", separator.training_history)), "plots")
    saved = separator.save(workdir / "model")
    mlflow.log_artifacts(str(saved), "model")
    uri = log_separator_model(saved)
    mlflow.set_tag("fhmm_ppl.model_uri", uri)


def _separation(config: ExperimentConfig, progress, on_status, workdir: Path) -> tuple[dict, dict]:
    """Train, separate, score and log a separation experiment; returns (scores, flat final metrics)."""
    task = load_task(config)
    mlflow.set_tags(run_tags(fingerprint(task)))
    sets = f", {config.training.n_models} sets" if config.training.n_models > 1 else ""
    on_status(f"training {len(task.train)} source models ({config.model.emission}, {config.model.n_states} states each, "
              f"{config.training.method}{sets})")
    options = SeparatorOptions(features=config.features, model=config.model, training=config.training,
                               inference=config.inference, seed=config.seed)
    separator = fit_separator(task.train, task.sample_rate, options, progress=True)
    for name, values in separator.training_history.items():
        for step, value in enumerate(np.asarray(values)):
            mlflow.log_metric(f"train.{name}.objective", float(value), step=step)
    scores, outputs = _score_all(task, separator, config, progress)
    flat = {}
    for method, per_source in scores.items():
        for name, metrics in per_source.items():
            flat.update({f"{method}.{name}.{k}": v for k, v in metrics.items()})
        flat.update({f"{method}.mean.{k}": float(np.mean([m[k] for m in per_source.values()])) for k in METRICS})
    mlflow.log_metrics(flat)
    _log_artifacts(config, task, separator, outputs, workdir)
    return scores, flat


def run_experiment(config: ExperimentConfig, *, progress: Optional[Callable] = None,
                   on_status: Callable[[str], None] = lambda message: None, nested: bool = False,
                   run_name: Optional[str] = None) -> RunResult:
    """Run one experiment (separation or classification) and track it in MLflow.

    Args:
        config: a validated experiment.
        progress: wraps an iterable with a progress display, as ``progress(items, description)``.
        on_status: receives short status lines (e.g. to print them).
        nested: start the run as a child of the active run (sweeps).
        run_name: overrides ``tracking.run_name``.

    Returns:
        ``RunResult``; raises ``ConfigError`` before any run is created when ``prepare`` finds a
        problem, and whatever else failed after marking the run FAILED.
    """
    prepare(config)
    progress = progress or (lambda items, description: items)
    enable_compilation_cache()
    uri = tracking_uri(config.tracking.uri)
    mlflow.set_tracking_uri(uri)
    _, exp_id = open_experiment(uri, config.tracking.experiment or config.name)
    with tracked_run(experiment_id=exp_id, run_name=run_name or config.tracking.run_name, nested=nested) as run:
        run_id = run.info.run_id
        on_status(f"MLflow run {run_id} (experiment {config.tracking.experiment or config.name!r}) at {uri}")
        mlflow.log_params(config.flat())
        mlflow.set_tag("fhmm_ppl.task", config.task)
        with tempfile.TemporaryDirectory() as tmp:
            if config.task == "classification":
                scores, flat = run_classification(config, progress, on_status, Path(tmp))
            else:
                scores, flat = _separation(config, progress, on_status, Path(tmp))
    return RunResult(run_id, exp_id, uri, scores, flat)


@dataclass
class SweepResult:
    """A sweep: the parent run and one ``(overrides, RunResult)`` per grid point."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    children: list = field(default_factory=list)


#: Columns of the sweep table (and ``fhmm-ppl compare``) per task: (heading, MLflow metric).
HEADLINE = {
    "separation": [("FHMM SDRi", "fhmm.mean.sdr_improvement"), ("FHMM SDR", "fhmm.mean.sdr"),
                   ("FHMM SI-SDR", "fhmm.mean.si_sdr"), ("NMF SDRi", "nmf.mean.sdr_improvement"),
                   ("IRM SDRi", "irm.mean.sdr_improvement")],
    "classification": [("accuracy", "accuracy"), ("bal. acc.", "balanced_accuracy"), ("F1 macro", "f1_macro"),
                       ("prec. macro", "precision_macro"), ("rec. macro", "recall_macro")],
}


def sweep_table(children: list, task: str = "separation") -> str:
    """A Markdown table of every grid point's headline metrics for its task."""
    keys = list(children[0][0]) if children else []
    columns = HEADLINE[task]
    lines = ["| " + " | ".join(keys + [c for c, _ in columns] + ["run"]) + " |", "|" + "---|" * (len(keys) + len(columns) + 1)]
    for overrides, result in children:
        cells = [str(overrides[k]) for k in keys] + [f"{result.metrics.get(m, float('nan')):.3f}" if task == "classification"
                                                      else f"{result.metrics.get(m, float('nan')):.2f}" for _, m in columns]
        lines.append("| " + " | ".join(cells + [result.run_id[:8]]) + " |")
    return "\n".join(lines)


def run_sweep(config: ExperimentConfig, *, progress: Optional[Callable] = None,
              on_status: Callable[[str], None] = lambda message: None) -> SweepResult:
    """Run every point of ``config.sweep`` as a nested child of one parent run, ending with a table."""
    variants = config.variants()  # every point validated and prepared before anything runs
    for _, variant in variants:
        prepare(variant)
    uri = tracking_uri(config.tracking.uri)
    mlflow.set_tracking_uri(uri)
    _, exp_id = open_experiment(uri, config.tracking.experiment or config.name)
    with tracked_run(experiment_id=exp_id, run_name=config.tracking.run_name or f"{config.name} sweep") as parent:
        on_status(f"sweep over {len(variants)} variants: parent run {parent.info.run_id}")
        mlflow.set_tag("fhmm_ppl.sweep", "parent")
        mlflow.set_tag("fhmm_ppl.task", config.task)
        mlflow.log_params({f"sweep.{k}": json.dumps(v) for k, v in config.sweep.items()})
        result = SweepResult(parent.info.run_id, exp_id, uri)
        for index, (overrides, child) in enumerate(variants):
            name = ", ".join(f"{k}={v}" for k, v in overrides.items())
            on_status(f"[{index + 1}/{len(variants)}] {name}")
            result.children.append((overrides, run_experiment(child, progress=progress, on_status=on_status,
                                                              nested=True, run_name=name)))
        table = sweep_table(result.children, config.task)
        mlflow.log_text(table, "sweep.md")
        key = HEADLINE[config.task][0][1]
        best_overrides, best = max(result.children, key=lambda child: child[1].metrics.get(key, -np.inf))
        mlflow.log_metric(f"best.{key}", float(best.metrics.get(key, np.nan)))
        mlflow.set_tag("fhmm_ppl.best", ", ".join(f"{k}={v}" for k, v in best_overrides.items()))
    return result
