"""Classification experiments end to end: config, CLI, sweep, MLflow metrics and artifacts, compare."""

import csv

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fhmm_ppl.cli import app
from fhmm_ppl.experiment import ConfigError, load_config
from fhmm_ppl.experiment.prepare import prepare

TINY = {
    "name": "tiny_classify",
    "task": "classification",
    "data": {"source": "demo"},
    "model": {"n_states": 2},
    "training": {"max_iter": 3},
    "classification": {"n_splits": 2, "n_features": 13},
}


def write_yaml(path, content):
    path.write_text(yaml.safe_dump(content))
    return path


def test_classification_config_defaults_and_errors(tmp_path):
    config = load_config(write_yaml(tmp_path / "c.yaml", {"task": "classification"}))
    assert (config.model.emission, config.model.n_states, config.model.covariance_type) == ("gaussian", 4, "diag")
    assert config.classification.scaler == "minmax" and config.classification.grouped
    for name in ("classify_sources", "classify_sweep"):
        assert load_config(f"experiments/{name}.yaml").task == "classification"
    with pytest.raises(ConfigError, match="classification uses the gaussian emission, not 'logmax'"):
        load_config(write_yaml(tmp_path / "a.yaml", {"task": "classification", "model": {"emission": "logmax"}}))
    with pytest.raises(ConfigError, match="the gaussian emission is for classification"):
        load_config(write_yaml(tmp_path / "b.yaml", {"model": {"emission": "gaussian"}}))
    with pytest.raises(ConfigError, match="covariance_type applies to the gaussian emission only"):
        load_config(write_yaml(tmp_path / "d.yaml", {"model": {"covariance_type": "full"}}))
    with pytest.raises(ConfigError, match=r"unknown key 'classification.scalar'; did you mean 'classification.scaler'\?"):
        load_config(write_yaml(tmp_path / "e.yaml", {"task": "classification", "classification": {"scalar": "minmax"}}))
    with pytest.raises(ConfigError, match="data.classes .* is needed for classification on files"):
        load_config(write_yaml(tmp_path / "f.yaml", {"task": "classification", "data": {"source": "files"}}))
    mma = load_config("experiments/classify_mma.yaml")  # the folder is looked for when a run starts, not here
    with pytest.raises(ConfigError, match=r"^data: root 'data/mma' is not a folder; download the Massive Distributed"):
        prepare(mma)


def test_classification_sweep_logs_metrics_plots_and_predictions(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = write_yaml(tmp_path / "tiny.yaml", TINY)
    result = CliRunner().invoke(app, ["sweep", str(config), "--grid", "model.covariance_type=spherical,diag"])
    assert result.exit_code == 0, result.output
    assert "| model.covariance_type | accuracy | bal. acc. | F1 macro" in result.output
    assert "60 recordings: chirp 12 (20%), mix 8 (13%), noise 8 (13%), speech 32 (53%)" in result.output
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny_classify").experiment_id])
    parent = [r for r in runs if r.data.tags.get("fhmm_ppl.sweep") == "parent"][0]
    assert "best.accuracy" in parent.data.metrics and parent.data.tags["fhmm_ppl.best"].startswith("model.covariance_type=")
    child = [r for r in runs if r.data.params.get("model.covariance_type") == "diag"][0]
    metrics, params = child.data.metrics, child.data.params
    for name in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "majority.accuracy",
                 "precision.speech", "recall.chirp", "f1.mix", "support.noise"):
        assert name in metrics, name
    assert metrics["majority.accuracy"] == pytest.approx(32 / 60) and metrics["support.speech"] == 32
    assert params["data.count.speech"] == "32" and params["data.n_groups"] == "4" and params["task"] == "classification"
    assert params["classification.scaler"] and not [k for k in params if k.startswith(("inference.", "evaluation."))]
    assert child.data.tags["fhmm_ppl.task"] == "classification" and child.data.tags["data_fingerprint"]
    assert len(client.get_metric_history(child.info.run_id, "fold.accuracy")) == 2
    assert len(client.get_metric_history(child.info.run_id, "train.fold0.speech.objective")) >= 2
    local = tmp_path / "dl"
    client.download_artifacts(child.info.run_id, "", str(local))
    for name in ("confusion_matrix.png", "feature_statistics.png", "log_likelihoods.png", "training_fold0.png"):
        assert (local / "plots" / name).stat().st_size > 1000, name
    rows = list(csv.DictReader(open(local / "predictions.csv")))
    assert len(rows) == 60 and len({r["recording"] for r in rows}) == 60
    accuracy = np.mean([r["true"] == r["predicted"] for r in rows])
    assert metrics["accuracy"] == pytest.approx(accuracy)
    for row in rows:  # the prediction is the model with the highest log-likelihood
        scores = {k[len("loglik."):]: float(v) for k, v in row.items() if k.startswith("loglik.")}
        assert row["predicted"] == max(scores, key=scores.get)
    by_fold = {}
    for row in rows:
        by_fold.setdefault(row["fold"], set()).add(row["group"])
    assert by_fold["0"].isdisjoint(by_fold["1"])  # grouped: a room is tested in one fold only
    assert "Confusion matrix" in (local / "report.md").read_text()
    shown = CliRunner().invoke(app, ["compare", "tiny_classify"])
    assert shown.exit_code == 0 and "accuracy" in shown.output and "gaussian/diag" in shown.output
    assert shown.output.count("FINISHED") == 3


def test_classification_on_the_dataset_layout_and_a_failed_run(mma_tree, tmp_path):
    import soundfile as sf
    from mlflow.tracking import MlflowClient

    from fhmm_ppl.experiment.runner import run_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config("experiments/classify_mma.yaml", [f"data.root={mma_tree}", "training.max_iter=2", "model.n_states=1",
                                                           f"tracking.uri={uri}", "classification.n_features=8"])
    result = run_experiment(config)
    assert result.scores["counts"] == {"chirp": 161, "mix": 16, "noise": 16, "speech": 170}
    assert result.scores["n_tested"] == 363 and 0.0 <= result.metrics["accuracy"] <= 1.0
    (tmp_path / "a.wav").write_bytes(b"RIFF0000WAVEjunk")
    sf.write(tmp_path / "b.wav", np.random.default_rng(0).normal(size=8000).astype(np.float32) * 0.1, 16000)
    bad = write_yaml(tmp_path / "bad.yaml", {"task": "classification", "name": "bad", "tracking": {"uri": uri},
                                             "data": {"source": "files", "classes": {"a": [str(tmp_path / "a.wav")],
                                                                                     "b": [str(tmp_path / "b.wav")]}}})
    out = CliRunner().invoke(app, ["run", str(bad)])
    assert out.exit_code == 1 and "a.wav: unreadable or corrupt audio" in out.output
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("bad").experiment_id])[0]
    assert run.info.status == "FAILED"
    assert "error.txt" in [a.path for a in client.list_artifacts(run.info.run_id)]
