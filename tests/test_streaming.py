"""Streaming separation: the incremental STFT and overlap-add against librosa's, the fixed-lag smoother
against offline smoothing of each prefix, and ``Separator.stream`` against ``Separator.separate``."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_problem
from test_separation import RATE, high_noise, low_tones

from fhmm_ppl import hmm
from fhmm_ppl.audio.features import STFTConfig, istft, stft
from fhmm_ppl.audio.tasks import demo_task
from fhmm_ppl.hmm.fixed_lag import lag_advance, lag_flush, lag_state
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import Separator, fit_separator
from fhmm_ppl.separation.framing import Framer, OverlapAdd


def random_cuts(rng, n: int, largest: int) -> list[int]:
    """Cut points ``0 = c_0 <= c_1 <= ... = n`` with empty and one-sample pieces among the others."""
    cuts, at = [0], 0
    while at < n:
        at = min(n, at + int(rng.choice([0, 1, rng.integers(2, largest)])))
        cuts.append(at)
    return cuts


def pieces(signal, cuts):
    return [signal[a:b] for a, b in zip(cuts, cuts[1:])]


@pytest.mark.parametrize("n_fft,hop,n", [(64, 16, 1000), (64, 16, 1001), (1024, 256, 5000), (64, 48, 333), (64, 16, 64)])
def test_framer_makes_the_offline_stft_from_chunks_of_any_size(n_fft, hop, n):
    rng = np.random.default_rng(n)
    signal = rng.normal(size=n).astype(np.float32)
    config = STFTConfig(n_fft, hop)
    framer = Framer(config)
    frames = [framer.push(piece) for piece in pieces(signal, random_cuts(rng, n, 3 * n_fft))] + [framer.finish()]
    expected = stft(signal, config)
    got = np.concatenate(frames)
    assert got.shape == expected.shape and got.dtype == np.complex64
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    assert framer.buffer.shape[0] <= 2 * n_fft  # what it holds is bounded, not the stream


@pytest.mark.parametrize("n_fft,hop,n", [(64, 16, 1000), (64, 16, 1001), (1024, 256, 5000), (64, 48, 333)])
def test_overlap_add_makes_the_offline_istft_sample_by_final_sample(n_fft, hop, n):
    rng = np.random.default_rng(n)
    config = STFTConfig(n_fft, hop)
    n_frames = 1 + n // hop
    spec = (rng.normal(size=(2, n_frames, config.n_bins)) + 1j * rng.normal(size=(2, n_frames, config.n_bins)))
    spec = spec.astype(np.complex64)
    synthesis = OverlapAdd(config, 2)
    cuts, out = random_cuts(rng, n_frames, 9), []
    for a, b in zip(cuts, cuts[1:]):
        out.append(synthesis.add(spec[:, a:b], n))
        assert synthesis.weights.shape[0] <= n_fft + 9 * hop  # what it holds is bounded, not the stream
    got = np.concatenate(out + [synthesis.finish(n)], axis=1)
    expected = np.stack([istft(s, config, length=n) for s in spec])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("lag", [0, 3, 30])
def test_fixed_lag_posteriors_are_offline_smoothing_of_each_prefix(lag):
    rng = np.random.default_rng(lag)
    n_states, n_frames, block = (3, 4), 17, 5
    log_init, log_trans, log_lik = random_problem(rng, n_states, n_frames)
    state, rows = lag_state(n_states, lag), []
    for lo in range(0, n_frames, block):
        part = log_lik[lo:lo + block]
        n = part.shape[0]
        padded = jnp.concatenate([part, jnp.full((block - n,) + n_states, jnp.nan)])  # padding is never read
        state, posts = lag_advance(log_init, log_trans, state, padded, jnp.arange(block) < n)
        rows.append(np.asarray(posts)[:n])
    rows = np.concatenate(rows)
    for t in range(lag, n_frames):
        prefix = hmm.posteriors(log_init, log_trans, log_lik[: t + 1], joint=True).joint
        np.testing.assert_allclose(rows[t], np.asarray(prefix[t - lag]).reshape(-1), atol=1e-5)
    whole = np.asarray(hmm.posteriors(log_init, log_trans, log_lik, joint=True).joint).reshape(n_frames, -1)
    left = min(lag, n_frames)
    flushed = np.asarray(lag_flush(log_trans, state))[lag + 1 - left:] if left else np.zeros((0, 12))
    np.testing.assert_allclose(flushed, whole[n_frames - left:], atol=1e-5)


# (emission, extra options): every posterior form the masks read and an ensemble
CASES = [
    ("complex_gaussian", {"n_models": 2}),
    ("complex_gaussian", {"inference": "mean_field"}),
    ("logmax", {}),
    ("log_mel", {}),  # state dictionaries (the default)
    ("log_mel", {"state_components": 0}),  # blended dominance and Wiener masks
    ("log_mel", {"phase_sources": ["tones"]}),  # a phase of their own for the tones (separation.phase)
]
IDS = ["complex_gaussian-ensemble", "complex_gaussian-mean_field", "logmax", "log_mel", "log_mel-blend", "log_mel-phased"]


@pytest.fixture(scope="module")
def separators():
    rng = np.random.default_rng(3)
    train = {"tones": low_tones(rng, 4), "noise": high_noise(rng, 4)}
    # a stream separates with the spectra as trained (refinement and the level read the whole recording)
    return {name: fit_separator(train, RATE, n_states=5, emission=emission, max_iter=6, n_mels=24,
                                **({"n_models": 1, "inference": "exact", "refine_iter": 0, "match_level": False} | extra))
            for name, (emission, extra) in zip(IDS, CASES)}


@pytest.fixture(scope="module")
def test_mix():
    rng = np.random.default_rng(11)
    tones, noise = low_tones(rng, 2.5), high_noise(rng, 2.5)
    n = 2.5 * RATE - 77  # ends inside a hop
    return (tones + noise)[: int(n)], np.stack([tones[: int(n)], noise[: int(n)]])


def streamed(separator, chunks, lag):
    out = list(separator.stream(chunks, lag=lag))
    assert len(out) == len(chunks) + 1  # one piece per chunk, then the rest
    return {name: np.concatenate([piece[name] for piece in out]) for name in separator.names}


@pytest.mark.parametrize("name", IDS)
def test_a_lag_covering_the_stream_gives_the_offline_separation(separators, test_mix, name):
    separator, (mixture, _) = separators[name], test_mix
    rng = np.random.default_rng(5)
    offline = separator.separate(mixture)
    online = streamed(separator, pieces(mixture, random_cuts(rng, mixture.shape[0], 3000)), lag=3.0)
    for key in separator.names:
        assert online[key].shape == mixture.shape and online[key].dtype == np.float32
        np.testing.assert_allclose(online[key], offline[key], atol=1e-4)


@pytest.mark.parametrize("name", ["complex_gaussian-ensemble", "complex_gaussian-mean_field", "log_mel", "log_mel-phased"])
def test_chunk_sizes_change_nothing_and_every_sample_comes_out(separators, test_mix, name):
    separator, (mixture, _) = separators[name], test_mix
    whole = streamed(separator, [mixture], lag=0.1)
    rng = np.random.default_rng(8)
    cuts = random_cuts(rng, mixture.shape[0], 700)
    assert any(b - a == 0 for a, b in zip(cuts, cuts[1:])) and any(b - a == 1 for a, b in zip(cuts, cuts[1:]))
    chunked = streamed(separator, pieces(mixture, cuts), lag=0.1)
    for key in separator.names:
        assert chunked[key].shape == mixture.shape
        np.testing.assert_allclose(chunked[key], whole[key], atol=1e-5)
    assert np.allclose(sum(whole.values()), mixture, atol=1e-4)  # soft masks: estimates sum to the mixture


@pytest.fixture(scope="module")
def demo():
    # hum: eight states separate the demo's reverberant, varied talkers from it far above the mixture
    # (from pink noise, 2 dB: too little for a sanity bound)
    task = demo_task("speech_noise", "hum", test_seconds=3.0)
    exact = fit_separator(task.train, task.sample_rate, n_states=8, emission="complex_gaussian", inference="exact",
                          max_iter=5, n_models=1, match_level=False)  # as a stream separates: the level as trained
    options = exact.options.model_copy(update={"inference": exact.options.inference.model_copy(
        update={"method": "mean_field"})})
    return task, {"exact": exact, "mean_field": Separator(exact.members, exact.sample_rate, options)}


@pytest.mark.parametrize("inference", ["exact", "mean_field"])
def test_causal_streaming_is_sane(demo, inference):
    task, separator = demo[0], demo[1][inference]
    mixture, references = task.mixtures[0], np.stack(list(task.references[0].values()))
    offline = separator.separate(mixture)
    causal = streamed(separator, pieces(mixture, list(range(0, mixture.shape[0], 512)) + [mixture.shape[0]]), lag=0)
    sdr = {kind: bss_eval(references, np.stack([est[k] for k in separator.names])).sdr.mean()
           for kind, est in (("offline", offline), ("causal", causal))}
    floor = bss_eval(references, np.stack([mixture, mixture])).sdr.mean()
    assert np.abs(causal["speech"] - offline["speech"]).max() > 1e-3  # filtering is not smoothing here
    assert sdr["causal"] > floor + 2.0 and sdr["causal"] > sdr["offline"] - 2.0, (sdr, floor)


def test_samples_come_out_after_the_lag_and_the_frame(separators, test_mix):
    separator, mixture = separators["logmax"], test_mix[0][:3000]
    hop, half = separator.options.stft.hop_length, separator.options.stft.n_fft // 2
    out = 0
    for n_in, piece in enumerate(separator.stream([mixture[i:i + 1] for i in range(3000)], lag=4 * hop / RATE), 1):
        out += piece["tones"].shape[0]
        if n_in <= 3000:  # a frame is complete when its last sample is in; frames leave the lag four frames later
            complete = (n_in - half) // hop + 1 if n_in >= half else 0
            assert out == max(0, (complete - 4) * hop - half), n_in
    assert out == 3000


def test_memory_does_not_grow_with_the_stream(separators, test_mix):
    import tracemalloc

    separator, mixture = separators["log_mel"], test_mix[0]

    def peak(repeats: int) -> int:
        signal = np.tile(mixture, repeats)
        tracemalloc.start()
        for _ in separator.stream(signal[i:i + 1000] for i in range(0, signal.shape[0], 1000)):
            pass
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    peak(1)  # compile first
    short, long = peak(2), peak(8)  # 5 s and 20 s
    assert long < short + 2**18, (short, long)  # 15 s more of one float32 per sample would add 480 kB


def test_int16_chunks_are_scaled_as_separate_scales_them(separators, test_mix):
    separator, mixture = separators["logmax"], test_mix[0][:4000]
    pcm = np.round(mixture * 20000).astype(np.int16)
    from_pcm = streamed(separator, [pcm[:1500], pcm[1500:]], lag=0.1)
    from_float = streamed(separator, [pcm[:1500] / 32768.0, pcm[1500:] / 32768.0], lag=0.1)
    for key in separator.names:
        np.testing.assert_allclose(from_pcm[key], from_float[key], atol=1e-6)


def test_short_and_empty_streams(separators):
    separator = separators["logmax"]
    assert all(p.shape == (0,) for p in streamed(separator, [], lag=0.1).values())
    assert all(p.shape == (0,) for p in streamed(separator, [np.zeros(0, np.float32)] * 3, lag=0.1).values())
    short = streamed(separator, [np.full(5, 0.1, np.float32), np.full(2, -0.1, np.float32)], lag=0.1)
    assert all(p.shape == (7,) and np.all(np.isfinite(p)) for p in short.values())


@pytest.mark.parametrize("chunk,message", [
    (np.zeros(10, np.complex64), "stream chunk 1: dtype complex64 is not audio"),
    (np.array(["a"]), "stream chunk 1: dtype <U1 is not audio"),
    (np.zeros((2, 10), np.float32), r"stream chunk 1 must be mono \(n_samples,\), got shape \(2, 10\)"),
    (np.array([0.0, np.nan]), "stream chunk 1 contains NaN or infinite samples"),
    (np.array([0.0, np.inf]), "stream chunk 1 contains NaN or infinite samples"),
])
def test_bad_chunks_are_one_line_errors(separators, chunk, message):
    stream = separators["logmax"].stream([np.zeros(300, np.float32), chunk])
    assert next(stream)["tones"].dtype == np.float32
    with pytest.raises(ValueError, match=message) as err:
        next(stream)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("lag", [-0.1, float("nan"), float("inf"), "0.1", None])
def test_bad_lags_are_refused_before_the_stream_starts(separators, lag):
    with pytest.raises(ValueError, match="lag must be a") as err:
        separators["logmax"].stream([np.zeros(10)], lag=lag)
    assert "\n" not in str(err.value)


def test_emissions_whose_frames_are_not_frame_local_are_refused(separators, monkeypatch):
    separator = separators["logmax"]
    monkeypatch.setattr(type(separator.emission), "frame_local", False)
    with pytest.raises(ValueError, match="the logmax emission cannot stream: its model frames depend on the whole"):
        separator.stream([np.zeros(10)])


def test_the_streaming_benchmark_runs(capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_streaming.py"
    monkeypatch.syspath_prepend(str(path.parent))  # its benchdoc import, as when run as a script
    spec = importlib.util.spec_from_file_location("bench_streaming", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--seconds", "1.5", "--repeats", "1", "--emission", "complex_gaussian", "--n-states", "4",
                         "--n-models", "1", "--max-iter", "2", "--lag", "0.1"])
    assert set(result) >= {"rtf_stream", "rtf_offline", "stream_over_offline", "sdr_stream"}
    assert all(np.isfinite(v) for v in result.values())
    assert "rtf_stream" in capsys.readouterr().out
    fitted = {live: bench.main(["--seconds", "3", "--repeats", "1", "--n-states", "4", "--n-models", "1", "--max-iter",
                                "2", "--lag", "0.1", "--chunk", "800", "--fit-seconds", "1.5"] + ["--live"] * live)
              for live in (False, True)}  # held back, the first output waits for the head; live, for the lag
    assert fitted[False]["first_output_after_s"] >= 1.5 > 0.5 > fitted[True]["first_output_after_s"]


def test_separate_command_streams_a_file_block_by_block(separators, test_mix, tmp_path, monkeypatch):
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.audio.io import read_audio
    from fhmm_ppl.cli import app

    separator = separators[IDS[0]]
    folder = separator.save(tmp_path / "model")
    mix, _ = test_mix
    sf.write(tmp_path / "mix.wav", mix, RATE, subtype="FLOAT")
    args = ["separate", str(folder), str(tmp_path / "mix.wav"), "--stream", "--block", "0.3"]
    # a lag covering the file: the offline separation, written block by block
    result = CliRunner().invoke(app, args + ["--lag", "100", "-o", str(tmp_path / "long")])
    assert result.exit_code == 0, result.output
    offline = separator.separate(mix)
    for name in separator.names:
        wave, rate = sf.read(tmp_path / "long" / f"mix_{name}.wav", dtype="float32")
        assert rate == RATE and wave.shape == mix.shape
        np.testing.assert_allclose(wave, offline[name], atol=1e-4)
    # a file at another rate is resampled as it streams; every sample comes out
    sf.write(tmp_path / "mix22.wav", 0.5 * mix, 22050, subtype="FLOAT")
    result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix22.wav"), "--stream", "--lag", "100",
                                      "-o", str(tmp_path / "rate")])
    assert result.exit_code == 0, result.output
    whole, _ = read_audio(tmp_path / "mix22.wav", sample_rate=RATE)
    wave, _ = sf.read(tmp_path / "rate" / f"mix22_{separator.names[0]}.wav", dtype="float32")
    assert abs(wave.shape[0] - whole.shape[0]) <= 2
    reference = separator.separate(whole)[separator.names[0]]
    n = min(wave.shape[0], whole.shape[0])
    assert bss_eval(reference[None, :n], wave[None, :n]).sdr[0] > 30  # streaming and whole-file resampling agree
    # a long recording goes through the stream without being asked, at the offline lag
    from fhmm_ppl.separation import streaming

    monkeypatch.setattr(streaming, "LONG_RECORDING", 1.0)
    result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "-o", str(tmp_path / "auto")])
    assert result.exit_code == 0 and "separated block by block with a 1 s lag" in result.output
    expected = streamed(separator, [mix], streaming.OFFLINE_LAG)
    wave, _ = sf.read(tmp_path / "auto" / f"mix_{separator.names[0]}.wav", dtype="float32")
    np.testing.assert_allclose(wave, expected[separator.names[0]], atol=1e-5)
    for bad, message in (([*args, "--lag", "-1"], "lag"), ([*args[:4], "--block", "0"], "--block must be positive")):
        result = CliRunner().invoke(app, bad)
        assert result.exit_code == 1 and message in result.output


def test_separate_command_pipes_audio_from_standard_input_to_standard_output(separators, test_mix, tmp_path):
    """``fhmm-ppl separate MODEL - -o -`` in a real pipe (nothing seekable): a WAV stream, or headerless
    PCM, in; the sources out as interleaved raw PCM channels; a lag covering the input gives the offline
    separation."""
    import io
    import subprocess
    import sys

    import soundfile as sf

    separator = separators[IDS[0]]
    folder = separator.save(tmp_path / "model")
    mix, _ = test_mix
    offline = separator.separate(mix)
    wav = io.BytesIO()
    sf.write(wav, mix, RATE, format="WAV", subtype="FLOAT")
    command = [sys.executable, "-m", "fhmm_ppl.cli", "separate", str(folder), "-", "--lag", "100", "--block", "0.2",
               "-o", "-"]
    done = subprocess.run(command, input=wav.getvalue(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    out = np.frombuffer(done.stdout, "<f4").reshape(-1, len(separator.names))
    assert out.shape[0] == mix.shape[0]
    for channel, name in enumerate(separator.names):
        np.testing.assert_allclose(out[:, channel], offline[name], atol=1e-4)
    assert f"2 channel(s): {', '.join(separator.names)}" in done.stderr.decode()
    # headerless 16-bit PCM in, one source out as 16-bit PCM
    pcm = np.round(np.clip(mix, -1, 1 - 2**-15) * 32768).astype("<i2")
    command = [sys.executable, "-m", "fhmm_ppl.cli", "separate", str(folder), "-", "--raw-input", "--pcm", "s16",
               "--rate", str(RATE), "--lag", "100", "-o", "-", "--source", separator.names[1]]
    done = subprocess.run(command, input=pcm.tobytes(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    out = np.frombuffer(done.stdout, "<i2") / 32768.0
    want = np.clip(separator.separate(pcm)[separator.names[1]], -1, 1 - 2**-15)  # s16 clips
    assert out.shape == want.shape and np.abs(out - want).max() < 2e-4
    # no header and no --raw-input: one line
    done = subprocess.run(command[:6] + ["-o", "-"], input=pcm.tobytes(), capture_output=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1].startswith("error: standard input: not readable audio")
