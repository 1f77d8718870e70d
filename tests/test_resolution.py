"""The finer STFT for a steady hum (``separation.resolution``): which noises are lines, which
mixtures show them, and the pair of separators that chooses per mixture."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from test_experiment import TINY, write_yaml
from typer.testing import CliRunner

from fhmm_ppl.audio.demo import noise
from fhmm_ppl.audio.features import STFTConfig
from fhmm_ppl.audio.tasks import demo_task
from fhmm_ppl.cli import app
from fhmm_ppl.experiment.streamed import latency_ms
from fhmm_ppl.separation import Separator, fit_separator, load
from fhmm_ppl.separation.resolution import LineResolved, line_share, lines_present, tonal_lines

RATE = 16000
FINE = STFTConfig(2048, 512)


def hum_at(fundamental: float, seconds: float, seed: int) -> np.ndarray:
    """Seven harmonics of ``fundamental`` Hz at 1/h, as the demo's hum, over a little white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    sig = sum(np.sin(2 * np.pi * fundamental * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 8))
    return (0.05 * sig + 0.002 * rng.normal(size=t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def task():
    return demo_task("speech_noise", "hum", test_seconds=3.0)


@pytest.fixture(scope="module")
def paired(task):
    return fit_separator(task.train, RATE, n_states=4, max_iter=5, n_models=1)


def test_a_steady_hum_is_lines_and_pink_noise_and_speech_are_not(task):
    hum, pink = noise("hum", 4.0, 0), noise("pink", 4.0, 0)
    assert line_share(hum, FINE) > 0.5 > 0.05 > line_share(pink, FINE)
    assert line_share(task.train["speech"], FINE) < 0.5
    lines = tonal_lines({"noise": hum}, FINE)
    harmonics = np.round(50.0 * np.arange(1, 8) * FINE.n_fft / RATE).astype(int)
    assert lines[harmonics].all() and lines.sum() < 4 * len(harmonics)  # the harmonics and their lobes, no more
    assert tonal_lines({"noise": pink}, FINE) is None and tonal_lines({"noise": pink, "hum": hum}, FINE)[harmonics].all()


def test_a_mixture_shows_the_lines_only_where_the_hum_is_the_trained_one(task):
    lines = tonal_lines({"noise": hum_at(50.0, 4.0, 0)}, FINE)
    speech = task.references[0]["speech"]
    assert lines_present(speech + hum_at(50.0, speech.shape[0] / RATE, 1), lines, FINE)
    assert not lines_present(speech + hum_at(60.0, speech.shape[0] / RATE, 1), lines, FINE)  # the other mains
    assert not lines_present(speech, lines, FINE)


def test_a_hum_trained_separator_separates_at_the_finer_stft_where_the_mixture_shows_it(task, paired, tmp_path):
    assert isinstance(paired, LineResolved) and paired.names == ["speech", "noise"]
    assert (paired.fine.options.features.n_fft, paired.fine.options.features.hop_length) == (2048, 512)
    assert paired.fine.options.features.line_n_fft is None and paired.options.features.n_fft == 1024
    mixture = task.mixtures[0]
    speech = task.references[0]["speech"]
    moved = (speech + hum_at(60.0, speech.shape[0] / RATE, 1)).astype(np.float32)
    assert paired.choose(mixture) is paired.fine and paired.choose(moved) is paired.coarse
    assert paired.choose(mixture[:1500]) is paired.coarse  # shorter than one fine frame
    estimates, gains = paired.separate(mixture, return_gains=True)
    assert gains.shape[2] == 1025
    np.testing.assert_array_equal(estimates["speech"], paired.fine.separate(mixture)["speech"])
    np.testing.assert_array_equal(paired.separate(moved)["speech"], paired.coarse.separate(moved)["speech"])
    refined = paired.refine(mixture)
    assert isinstance(refined, Separator) and refined.options.features.n_fft == 2048 and refined.options.refine_iter == 0
    plain = paired.with_refinement(0)
    assert isinstance(plain, LineResolved) and plain.coarse.options.refine_iter == plain.fine.options.refine_iter == 0
    # saved and loaded, the pair separates alike; a plain separator saved over it leaves no finer one behind
    back = load(paired.save(tmp_path / "pair"))
    assert isinstance(back, LineResolved) and np.array_equal(back.lines, paired.lines)
    np.testing.assert_allclose(back.separate(mixture)["speech"], estimates["speech"], atol=1e-6)
    paired.coarse.save(tmp_path / "pair")
    assert isinstance(load(tmp_path / "pair"), Separator)


def test_a_stream_fitted_on_its_first_seconds_takes_the_finer_stft_where_they_show_the_hum(task, paired):
    mixture = task.mixtures[0]
    chunks = [mixture[i:i + 3000] for i in range(0, len(mixture), 3000)]

    def joined(pieces):
        return np.concatenate([p["speech"] for p in pieces])

    fitted = paired.fine.refine(mixture[: 2 * RATE])
    np.testing.assert_allclose(joined(paired.stream(chunks, lag=0.3, fit_seconds=2.0)),
                               joined(fitted.stream(chunks, lag=0.3)), atol=1e-5)
    np.testing.assert_array_equal(joined(paired.stream(chunks, lag=0.3)), joined(paired.coarse.stream(chunks, lag=0.3)))
    live = [p["speech"] for p in paired.stream(chunks, lag=0.3, fit_seconds=2.0, live=True)]
    handover = sum(len(p) for p in live[:-(-2 * RATE // 3000)])  # out before the head was in: the coarse stream's
    live, fade = np.concatenate(live), paired.options.stft.n_fft
    np.testing.assert_allclose(live[:handover], joined(paired.coarse.stream(chunks, lag=0.3))[:handover], atol=1e-5)
    np.testing.assert_allclose(live[handover + fade:], joined(fitted.stream(chunks, lag=0.3))[handover + fade:], atol=1e-5)


def test_no_finer_separator_without_lines_or_when_switched_off(task):
    options = {"n_states": 3, "max_iter": 2, "n_models": 1}
    assert isinstance(fit_separator(task.train, RATE, line_n_fft=None, **options), Separator)
    assert isinstance(fit_separator(task.train, RATE, line_n_fft=1024, **options), Separator)  # not finer
    assert isinstance(fit_separator({**task.train, "noise": noise("pink", 4.0, 0)}, RATE, **options), Separator)
    # a hum named as something other than noise is a source like speech, not the recording's noise
    assert isinstance(fit_separator({"speech": task.train["speech"], "hum": task.train["noise"]}, RATE, **options),
                      Separator)


def test_an_experiment_on_a_hum_logs_the_finer_stft_s_latency(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_yaml(tmp_path / "hum.yaml", {
        **TINY, "name": "hum", "tracking": {"uri": uri}, "data": {**TINY["data"], "noise": "hum"},
        "evaluation": {"baselines": [], "stream_lags": [0]}})
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("hum").experiment_id])[0]
    assert run.data.params["features.line_n_fft"] == "2048"
    assert run.data.metrics["stream.lag_0ms.latency_ms"] == pytest.approx(latency_ms(0, RATE, 2048, 512))
    assert isinstance(load(client.download_artifacts(run.info.run_id, "model")), LineResolved)
