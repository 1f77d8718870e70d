"""A classification experiment end to end: recordings -> features -> per-label HMMs under
stratified (grouped) splits -> metrics, predictions and plots in the active MLflow run.

Called by ``runner.run_experiment`` (which owns the run and marks it FAILED on
errors). Metric names: ``accuracy``, ``balanced_accuracy``,
``precision_macro``, ``recall_macro``, ``f1_macro``; per class
``precision.<label>``, ``recall.<label>``, ``f1.<label>``, ``support.<label>``;
``majority.accuracy`` (always predicting the largest class: the floor);
step metrics ``fold.accuracy`` and ``train.fold<k>.<label>.objective``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import yaml

from fhmm_ppl.classification import (
    ClassifierOptions,
    LabelledRecordings,
    demo_recordings,
    evaluate,
    features,
    file_recordings,
    make_splits,
    mma_recordings,
)
from fhmm_ppl.experiment import plots
from fhmm_ppl.experiment.config import ExperimentConfig
from fhmm_ppl.experiment.data import fingerprint_arrays
from fhmm_ppl.experiment.provenance import run_tags
from fhmm_ppl.metrics import classification_report

#: Seconds read from each dataset recording unless ``data.max_seconds`` says otherwise.
MMA_SECONDS = 10.0


def load_recordings(config: ExperimentConfig, progress) -> LabelledRecordings:
    """The experiment's labelled recordings."""
    data = config.data
    if data.source == "demo":
        return demo_recordings(config.seed)
    if data.source == "mma":
        channel = data.channel if isinstance(data.channel, int) else 0
        return mma_recordings(data.root, channel, data.sample_rate, data.max_seconds or MMA_SECONDS, progress)
    return file_recordings(data.classes, data.sample_rate, data.channel, data.max_seconds)


def options_from(config: ExperimentConfig) -> ClassifierOptions:
    """The classifier's options: the experiment's settings sections and seed."""
    return ClassifierOptions(features=config.features, model=config.model, training=config.training,
                             classification=config.classification, seed=config.seed)


def imbalance_line(counts: dict) -> str:
    """One line stating the class imbalance and the majority-class accuracy it implies."""
    total = sum(counts.values())
    parts = ", ".join(f"{label} {n} ({100 * n / total:.0f}%)" for label, n in counts.items())
    return f"{total} recordings: {parts}; always predicting the largest class scores accuracy {max(counts.values()) / total:.3f}"


def report_markdown(report: dict, counts: dict, n_tested: int) -> str:
    """The report as Markdown: headline metrics, per-class table, confusion matrix, imbalance."""
    labels = report["labels"]
    lines = [f"# Classification report ({n_tested} test predictions)", "", imbalance_line(counts), "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {report[k]:.3f} |" for k in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro")]
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {report['per_class'][c]['precision']:.3f} | {report['per_class'][c]['recall']:.3f} | "
              f"{report['per_class'][c]['f1']:.3f} | {report['per_class'][c]['support']} |" for c in labels]
    lines += ["", "Confusion matrix (rows true, columns predicted):", "", "| true \\ predicted | " + " | ".join(labels) + " |",
              "|" + "---|" * (len(labels) + 1)]
    lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(labels, report["confusion"])]
    return "\n".join(lines) + "\n"


def run_classification(config: ExperimentConfig, progress, on_status, workdir: Path) -> tuple[dict, dict]:
    """Run a classification experiment inside the active MLflow run.

    Args:
        config: a validated experiment with ``task: classification``; the active MLflow run receives everything.
        progress: ``progress(items, description)``; on_status: status lines.
        workdir: a scratch folder for artifacts.

    Returns:
        ``(report, flat final metrics)``: the report of ``metrics.classification_report``
        plus ``counts`` (recordings per class) and ``n_tested``.
    """
    recordings = load_recordings(config, progress)
    counts = recordings.counts()
    if len(counts) < 2:
        raise ValueError(f"classification needs at least two classes, found {list(counts)}")
    mlflow.set_tags(run_tags(fingerprint_arrays(
        (f"{name}|{label}", signal) for name, label, signal in zip(recordings.names, recordings.labels, recordings.signals))))
    mlflow.log_params({"data.n_recordings": len(recordings.signals), "data.n_groups": len(set(recordings.groups)),
                       **{f"data.count.{label}": n for label, n in counts.items()}})
    on_status(imbalance_line(counts))
    options = options_from(config)
    sequences = [features(s, recordings.sample_rate, options) for s in progress(recordings.signals, "features")]
    c = config.classification
    splits = make_splits(recordings.labels, recordings.groups if c.grouped else None, c.split, c.n_splits,
                         c.test_fraction, config.seed)
    model = config.model
    on_status(f"{len(splits)} {c.split} split(s), stratified{' and grouped' if c.grouped else ''}; one {model.n_states}-state "
              f"{model.covariance_type} HMM per class on {c.features} ({config.training.method}, {c.scaler} scaling "
              "fitted on training recordings only)")
    result = evaluate(sequences, recordings.labels, splits, options, progress)
    report = classification_report(result.y_true, result.y_pred, result.labels)
    for fold, model in enumerate(result.classifiers):
        test = result.fold == fold
        mlflow.log_metric("fold.accuracy", float(np.mean(result.y_true[test] == result.y_pred[test])), step=fold)
        for label, values in model.history.items():
            for step, value in enumerate(np.asarray(values)):
                mlflow.log_metric(f"train.fold{fold}.{label}.objective", float(value), step=step)
    flat = {k: report[k] for k in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro")}
    for label, values in report["per_class"].items():
        flat.update({f"{metric}.{label}": float(v) for metric, v in values.items()})
    flat["majority.accuracy"] = float(np.mean(result.y_true == max(counts, key=counts.get)))
    mlflow.log_metrics(flat)
    _log_artifacts(config, recordings, sequences, result, report, counts, workdir)
    return {**report, "counts": counts, "n_tested": len(result.tested)}, flat


def _log_artifacts(config, recordings, sequences, result, report, counts, workdir: Path) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    mlflow.log_artifact(str(workdir / "config.yaml"))
    (workdir / "report.md").write_text(report_markdown(report, counts, len(result.tested)))
    mlflow.log_artifact(str(workdir / "report.md"))
    with open(workdir / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["recording", "group", "fold", "true", "predicted", "frames"] + [f"loglik.{c}" for c in result.labels])
        for row, index in enumerate(result.tested):
            writer.writerow([recordings.names[index], recordings.groups[index], int(result.fold[row]), result.y_true[row],
                             result.y_pred[row], int(result.n_frames[row])] + [f"{v:.6g}" for v in result.scores[row]])
    mlflow.log_artifact(str(workdir / "predictions.csv"))
    folder = workdir / "plots"
    folder.mkdir()
    mlflow.log_artifact(str(plots.confusion_matrix(folder / "confusion_matrix.png", report["confusion"], report["labels"])), "plots")
    train, first = result.splits[0][0], result.classifiers[0]
    raw = np.concatenate([sequences[i] for i in train])
    mlflow.log_artifact(str(plots.feature_statistics(folder / "feature_statistics.png", raw, first.normalizer.transform(raw),
                                                     first.options.classification.scaler)), "plots")
    per_frame = result.scores / result.n_frames[:, None]
    mlflow.log_artifact(str(plots.log_likelihoods(folder / "log_likelihoods.png", per_frame, result.y_true, result.labels)), "plots")
    mlflow.log_artifact(str(plots.training_curves(folder / "training_fold0.png", first.history)), "plots")
