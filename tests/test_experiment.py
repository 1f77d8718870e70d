"""Experiment files, the fhmm-ppl CLI end to end, and what lands in MLflow."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from fhmm_ppl.cli import app
from fhmm_ppl.experiment import ConfigError, load_config
from fhmm_ppl.experiment.prepare import prepare

TINY = {
    "name": "tiny",
    "data": {"source": "demo", "task": "speech_noise", "noise": "white", "test_seconds": 1.0},
    "model": {"n_states": 3},
    "training": {"max_iter": 2},
    "evaluation": {"baselines": ["irm"]},
}


def write_yaml(path, content):
    path.write_text(yaml.safe_dump(content) if isinstance(content, dict) else content)
    return path


def test_config_errors_are_one_line_with_the_dotted_path(tmp_path):
    good = write_yaml(tmp_path / "good.yaml", TINY)
    assert load_config(good, ["model.n_states=5"]).model.n_states == 5
    with pytest.raises(ConfigError, match=r"unknown key 'training.max_iters'; did you mean 'training.max_iter'\?"):
        load_config(good, ["training.max_iters=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'modle'; did you mean 'model'\?"):
        load_config(write_yaml(tmp_path / "typo.yaml", {"modle": {"n_states": 3}}))
    with pytest.raises(ConfigError, match=r"model.n_states: Input should be a valid integer"):
        load_config(good, ["model.n_states=lots"])
    with pytest.raises(ConfigError, match=r"data.noise: Input should be 'white'"):
        load_config(good, ["data.noise=purple"])
    with pytest.raises(ConfigError, match=r"malformed YAML at line 3, column 1"):
        load_config(write_yaml(tmp_path / "bad.yaml", "name: x\nmodel: [unclosed\n"))
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_config(tmp_path / "absent.yaml")
    files = write_yaml(tmp_path / "files.yaml", {"data": {"source": "files", "train": {"a": ["nowhere/*.wav"], "b": ["x"]},
                                                          "test_clean": {"a": ["y"], "b": ["z"]}}})
    parsed = load_config(files)  # validation expands no glob
    with pytest.raises(ConfigError, match=r"^x.yaml: data: no file matches 'nowhere/\*.wav' \(train.a\)$"):
        prepare(parsed, "x.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(good, ["model.n_states"])


def test_shipped_demo_experiments_validate():
    for name in ("speech_noise", "two_talkers", "speech_chirp", "sweep_states", "search_states"):
        config = load_config(f"experiments/{name}.yaml")
        assert config.data.source == "demo"
        assert len(config.variants()) == {"sweep_states": 6, "search_states": 6}.get(name, 1)  # every point validates


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    config = write_yaml(folder / "tiny.yaml", {**TINY, "tracking": {"uri": uri}})
    result = CliRunner().invoke(app, ["run", str(config)])
    if result.exit_code == 0:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
        client.download_artifacts(run.info.run_id, "", str(folder / "dl"))
    return folder, uri, result


def test_run_tracks_params_metrics_artifacts(tracked_run):
    from mlflow.tracking import MlflowClient

    folder, uri, result = tracked_run
    assert result.exit_code == 0, result.output
    assert "fhmm" in result.output and "irm" in result.output and "fhmm-ppl ui" in result.output
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.n_states"] == "3" and run.data.params["data.noise"] == "white"
    # inference.pitch_shifts unset resolves to pitch warps: the demo's white noise is steady
    assert run.data.params["inference.pitch_shifts"] == "None" and run.data.params["pitch_shifts"] == "2"
    assert not [k for k in run.data.params if k.startswith("classification.")]  # what a separation never reads
    metrics = run.data.metrics
    for key in ("fhmm.speech.sdr", "fhmm.mean.sdr_improvement", "irm.noise.sir", "mixture.speech.si_sdr"):
        assert np.isfinite(metrics[key])
    assert metrics["irm.mean.sdr"] > metrics["mixture.mean.sdr"]
    assert len(client.get_metric_history(run.info.run_id, "train.speech.objective")) >= 1
    assert len(run.data.tags["data_fingerprint"]) == 16 and run.data.tags["jax_backend"] == "cpu"
    # Artifacts live beside the SQLite database, not in the working directory.
    assert run.info.artifact_uri.startswith((folder / "artifacts").as_uri())
    wave, rate = sf.read(folder / "dl" / "audio" / "mixture00" / "speech_estimate.wav")
    assert rate == 16000 and len(wave) == 16000 and np.all(np.isfinite(wave))
    for name in ("config.yaml", "model/separator.json", "plots/spectrograms_mixture00.png", "plots/training.png",
                 "plots/masks_mixture00.png", "plots/states_mixture00.png"):
        assert (folder / "dl" / name).exists(), name


def test_separate_command_uses_the_logged_model(tracked_run, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    folder, uri, _ = tracked_run
    mixture = folder / "dl" / "audio" / "mixture00" / "mixture.wav"
    result = CliRunner().invoke(app, ["separate", str(folder / "dl" / "model"), str(mixture), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["mixture_noise.wav", "mixture_speech.wav"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    run_id = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0].info.run_id
    by_id = CliRunner().invoke(app, ["separate", run_id, str(mixture), "-o", str(tmp_path / "b")])
    assert by_id.exit_code == 0, by_id.output
    assert len(list((tmp_path / "b").iterdir())) == 2
    short = CliRunner().invoke(app, ["separate", run_id[:8], str(mixture), "-o", str(tmp_path / "s")])  # as compare prints it
    assert short.exit_code == 0, short.output
    np.testing.assert_array_equal(sf.read(tmp_path / "s" / "mixture_speech.wav")[0], sf.read(tmp_path / "b" / "mixture_speech.wav")[0])
    model_uri = client.get_run(run_id).data.tags["fhmm_ppl.model_uri"]
    by_uri = CliRunner().invoke(app, ["separate", model_uri, str(mixture), "-o", str(tmp_path / "c")])
    assert by_uri.exit_code == 0, by_uri.output
    np.testing.assert_allclose(sf.read(tmp_path / "c" / "mixture_speech.wav")[0], sf.read(tmp_path / "b" / "mixture_speech.wav")[0])
    bad = CliRunner().invoke(app, ["separate", "0123456789abcdef", str(mixture)])
    assert bad.exit_code == 1 and "not a separator folder" in bad.output


def test_a_failing_run_is_marked_failed_with_its_traceback(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", np.random.default_rng(0).normal(size=8000).astype(np.float32) * 0.1, 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEnot really")
    config = write_yaml(tmp_path / "fail.yaml", {
        "name": "failing", "tracking": {"uri": uri},
        "data": {"source": "files", "train": {"a": [str(tmp_path / "a.wav")], "b": [str(tmp_path / "broken.wav")]},
                 "test_clean": {"a": [str(tmp_path / "a.wav")], "b": [str(tmp_path / "b.wav")]}},
    })
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 1
    assert "broken.wav: unreadable or corrupt audio" in result.output and "Traceback" not in result.output
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("failing").experiment_id])[0]
    assert run.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["error.txt"]


def test_config_errors_caught_before_a_run_starts(tmp_path):
    good = write_yaml(tmp_path / "good.yaml", TINY)
    for override, message in [
        ("model.priors.psd={name: dirichlet}", "model.priors.psd: no prior role 'psd' for the log_mel emission; roles: covars"),
        ("inference.mask=wiener", "inference.mask: wiener is now inference.mask: soft"),
        ("inference.logmax_mask=blend", "inference.logmax_mask is now inference.soft_mask"),
        ("inference.soft_mask=wiener", None),
        ("model.emission=complex_gaussian", None),
        ("data.snr_db=.nan", "data.snr_db: must be a finite number of dB"),
        ("seed=-1", "seed: Input should be greater than or equal to 0"),
        ("features.hop_length=2048", "hop_length \\(2048\\) must not exceed n_fft \\(1024\\)"),
        ("model.n_states=[3", "--set 'model.n_states=\\[3': the value is not valid YAML"),
        ("=5", "is not a dotted key"),
    ]:
        if message is None:
            load_config(good, [override])
            continue
        with pytest.raises(ConfigError, match=message):
            load_config(good, [override])
    with pytest.raises(ConfigError, match="inference.method: inference method mean_field is not available for the logmax"):
        load_config(good, ["model.emission=logmax", "inference.method=mean_field"])
    with pytest.raises(ConfigError, match="inference.soft_mask: soft_mask 'blend' is not made by the complex_gaussian"):
        load_config(good, ["model.emission=complex_gaussian", "inference.soft_mask=blend"])
    with pytest.raises(ConfigError, match="model.emission: emission must be one of log_mel, complex_gaussian, logmax"):
        load_config(good, ["model.emission=log_mell"])
    with pytest.raises(ConfigError, match="^model.priors.means: prior 'dirichlet' cannot be used for the means role"):
        prepare(load_config(good, ["model.priors.means={name: dirichlet}"]))
    with pytest.raises(ConfigError, match="not a file"):
        load_config(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(tmp_path / "binary.yaml")
    sf.write(tmp_path / "a.wav", np.sin(np.arange(8000) / 5).astype(np.float32), 16000)
    files = {"source": "files", "train": {"a": [str(tmp_path / "a.wav")], "b": [str(tmp_path / "a.wav")]},
             "test_clean": {"a": [str(tmp_path / "a.wav")], "c": [str(tmp_path / "a.wav")]}}
    with pytest.raises(ConfigError, match=r"data.test_clean names \['a', 'c'\], but the training sources are \['a', 'b'\]"):
        load_config(write_yaml(tmp_path / "names.yaml", {**TINY, "data": files}))
    named = {**files, "test_clean": {"a": files["train"]["a"], "b": files["train"]["b"]}}
    for key in ("refine", "average", "phase_sources"):  # a source named for the noise's treatment must be one of them
        with pytest.raises(ConfigError, match=rf"inference.{key} names hiss, not one of the sources \(a, b\)"):
            load_config(write_yaml(tmp_path / "noise.yaml", {**TINY, "data": named, "inference": {key: "hiss"}}))
    load_config(write_yaml(tmp_path / "plain.yaml", {**TINY, "data": named, "inference": {"average": "hiss",
                                                                                        "average_seconds": 0}}))
    with pytest.raises(ConfigError, match="train.b lists no files"):
        load_config(write_yaml(tmp_path / "empty.yaml", {**TINY, "data": {**files, "train": {**files["train"], "b": []}}}))


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    good = write_yaml(tmp_path / "good.yaml", TINY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    result = CliRunner().invoke(app, ["compare"])
    assert result.exit_code == 0 and "no runs in any experiment at sqlite:///" in result.output
    result = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1 and result.output.strip().endswith("not a file (give the experiment's YAML file)")
    result = CliRunner().invoke(app, ["validate", str(good), "--set", "model.n_states=[3"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(app, ["sweep", str(good)])  # no grid: one error line, not two
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "error: no grid: give --grid key=v1,v2, a sweep: section in the file, or --search optuna with sweep.space"]
    sweep = write_yaml(tmp_path / "sweep.yaml", {**TINY, "sweep": {"features.hop_length": [128, 2048]}})
    result = CliRunner().invoke(app, ["validate", str(sweep)])  # every point is checked, not only the first
    assert result.exit_code == 1 and "hop_length (2048) must not exceed n_fft (1024)" in result.output


def test_validate_as_a_real_subprocess(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"model": {"n_sates": 3}})
    out = subprocess.run([sys.executable, "-m", "fhmm_ppl.cli", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().endswith("unknown key 'model.n_sates'; did you mean 'model.n_states'?")
    ok = subprocess.run([sys.executable, "-m", "fhmm_ppl.cli", "validate", "experiments/speech_noise.yaml"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")


PLUGIN = '''
from dataclasses import dataclass
import jax.numpy as jnp
import numpyro.distributions as dist
from fhmm_ppl.models import register_prior

@register_prior("test_plugin_lognormal")
@dataclass(frozen=True)
class LogNormalPSD:
    scale: float = 3.0
    def distribution(self, shape):
        return dist.LogNormal(jnp.full(shape, -4.0), self.scale).to_event(len(shape))
'''


def test_a_user_prior_from_a_plugin_trains_with_svi_and_em_refuses_it(tmp_path):
    from mlflow.tracking import MlflowClient

    (tmp_path / "my_prior.py").write_text(PLUGIN)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    content = {**TINY, "name": "plugin", "tracking": {"uri": uri},
               "model": {"emission": "complex_gaussian", "n_states": 3, "plugins": ["my_prior.py"],
                         "priors": {"psd": {"name": "test_plugin_lognormal", "params": {"scale": 2.0}},
                                    "transition": {"name": "dirichlet", "params": {"sticky": 5.0}}}},
               "training": {"method": "svi", "svi_steps": 20}}
    config = write_yaml(tmp_path / "plugin.yaml", content)
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("plugin").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.priors.psd.name"] == "test_plugin_lognormal"
    assert len(client.get_metric_history(run.info.run_id, "train.speech.objective")) == 20

    # EM cannot honour the prior: refused when the run starts (after the plug-in is loaded), before any run is created
    result = CliRunner().invoke(app, ["run", str(config), "--set", "training.method=em"])
    assert result.exit_code == 1
    assert "prior 'test_plugin_lognormal' has no closed-form M-step, so EM cannot honour it; use training.method: svi" in result.output
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run.info.run_id]


def test_shipped_custom_prior_experiment_validates():
    config = load_config("experiments/custom_prior.yaml")
    assert config.training.method == "svi" and config.model.priors["psd"].name == "tilted_lognormal_psd"


def test_sweep_runs_nested_children_and_compare_shows_them(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = write_yaml(tmp_path / "sweep.yaml", {**TINY, "name": "tiny_sweep"})
    result = CliRunner().invoke(app, ["sweep", str(config), "--grid", "model.n_states=2,3"])
    assert result.exit_code == 0, result.output
    assert "| model.n_states | FHMM SDR" in result.output and "with 2 child runs" in result.output
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny_sweep").experiment_id])
    parent = [r for r in runs if r.data.tags.get("fhmm_ppl.sweep") == "parent"][0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["model.n_states"] for r in children) == ["2", "3"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "sweep.md" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert sorted(r.data.params["states.speech"] for r in children) == ["2", "3"]  # the counts as trained
    shown = CliRunner().invoke(app, ["compare", "tiny_sweep"])
    assert shown.exit_code == 0 and shown.output.count("FINISHED") == 3
    missing = CliRunner().invoke(app, ["compare", "nope"])
    assert missing.exit_code == 1 and "no experiment named 'nope'" in missing.output
    bare = CliRunner().invoke(app, ["sweep", str(config)])
    assert bare.exit_code == 1 and "no grid" in bare.output


def test_logged_pyfunc_model_separates(tracked_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    folder, uri, _ = tracked_run
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
    model = mlflow.pyfunc.load_model(run.data.tags["fhmm_ppl.model_uri"])
    mixture, _ = sf.read(folder / "dl" / "audio" / "mixture00" / "mixture.wav", dtype="float32")
    out = model.predict(mixture)
    assert sorted(out) == ["noise", "speech"] and out["speech"].shape == mixture.shape
    expected, _ = sf.read(folder / "dl" / "audio" / "mixture00" / "speech_estimate.wav", dtype="float32")
    np.testing.assert_allclose(out["speech"], expected, atol=1e-5)


def test_a_semi_supervised_experiment_learns_the_unknown_source_on_each_mixture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_yaml(tmp_path / "semi.yaml", {
        **TINY, "name": "semi", "tracking": {"uri": uri},
        "model": {"emission": "complex_gaussian", "n_states": 3, "unknown": "noise", "unknown_states": 2},
        "training": {"max_iter": 2, "n_models": 1, "adapt_iter": 4},
        "evaluation": {"baselines": ["nmf", "irm"], "nmf_components": 4}})
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("semi").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.params["model.unknown"] == "['noise']"
    assert {"fhmm.noise.sdr_improvement", "nmf.noise.sdr", "train.speech.objective"} <= set(run.data.metrics)
    assert "train.noise.objective" not in run.data.metrics  # never trained on its clean audio
    curve = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "adapt.mixture00.objective"),
                                     key=lambda m: m.step)]
    assert len(curve) >= 4 and all(b >= a - 1e-3 * abs(a) for a, b in zip(curve, curve[1:]))  # EM: never down
    bad = write_yaml(tmp_path / "bad.yaml", {**TINY, "model": {"emission": "complex_gaussian", "unknown": ["wind"]}})
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 1 and "model.unknown names ['wind'], which the task does not have" in result.output


def test_streaming_is_scored_at_each_lag_against_the_whole_file(tmp_path, monkeypatch):
    from fhmm_ppl.experiment.streamed import latency_ms

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_yaml(tmp_path / "lags.yaml", {**TINY, "name": "lags", "tracking": {"uri": uri},
                                                 "evaluation": {"baselines": ["irm"], "stream_lags": [0.1, 0, 100.0]}})
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("lags").experiment_id])[0]
    metrics = run.data.metrics
    # a lag covering the mixture is the whole-file separation
    assert metrics["stream.lag_100000ms.sdr_improvement"] == pytest.approx(metrics["fhmm.mean.sdr_improvement"], abs=1e-3)
    assert metrics["stream.lag_0ms.latency_ms"] == pytest.approx(latency_ms(0, 16000, 1024, 256)) == 48.0
    assert metrics["stream.lag_100ms.latency_ms"] == pytest.approx(1000 * (7 * 256 + 768) / 16000)
    assert all(metrics[f"stream.lag_{ms}ms.rtf"] > 0 for ms in (0, 100, 100000))
    curve = client.get_metric_history(run.info.run_id, "stream.sdr_improvement")
    assert sorted(m.step for m in curve) == [0, 100, 100000]
    # the default log-mel separator refines the noise on each mixture first, EM never going down
    refine = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "refine.mixture00.objective"),
                                      key=lambda m: m.step)]
    assert len(refine) == 3 and all(b >= a - 1e-3 * abs(a) for a, b in zip(refine, refine[1:]))
    assert -96.0 <= metrics["level.mixture00"] <= 96.0  # the mixture's level, dB against the training audio
    assert "plots/streaming.png" in [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    with pytest.raises(ConfigError, match="lags are seconds"):
        load_config(write_yaml(tmp_path / "bad.yaml", {**TINY, "evaluation": {"stream_lags": [-0.1]}}))
