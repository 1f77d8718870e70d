"""Refinement of trained sources on the mixture: the MAP M-step and prior against float64 references,
monotone EM, the anchor's limits, what changes (only the named sources), what it buys on a mismatch."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats
from test_separation import RATE, high_noise, low_tones

from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.options import SeparatorOptions
from fhmm_ppl.separation.refinement import inverse_gamma_log_prior, refine_models, refine_spectra, strided
from fhmm_ppl.separation.separator import Separator
from fhmm_ppl.settings import SettingError


def band_noise(rng, seconds, low, high, envelope=None):
    """Noise band-limited to ``low``-``high`` Hz, ``(n,)``, times ``envelope(t)`` (``t`` in seconds) if given."""
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs < low) | (freqs > high)] = 0
    sig = np.fft.irfft(spec, n)
    if envelope is not None:
        sig = sig * envelope(np.arange(n) / RATE)
    return (0.3 * sig / sig.std()).astype(np.float32)


@pytest.fixture(scope="module")
def mismatch():
    """Tones and noise trained on a 2.5-3.5 kHz band; the test noise also fills 1.5-2.5 kHz."""
    rng = np.random.default_rng(5)
    train = {"tones": low_tones(rng, 4), "noise": high_noise(rng, 4)}
    tones, noise = low_tones(rng, 3), band_noise(rng, 3, 1500, 3500)
    return train, np.stack([tones, noise])


@pytest.fixture(scope="module")
def separators(mismatch):
    train, _ = mismatch
    return {emission: fit_separator(train, RATE, n_states=4, emission=emission, max_iter=8, n_mels=24, n_models=2,
                                    refine_iter=8)
            for emission in ("complex_gaussian", "log_mel", "logmax")}


def test_inverse_gamma_prior_is_scipys():
    rng = np.random.default_rng(0)
    psd, anchor = rng.uniform(0.1, 3, (3, 5)), rng.uniform(0.1, 3, (3, 5))
    for tau in (1.5, 20.0):
        expected = stats.invgamma.logpdf(psd, tau - 1, scale=tau * anchor).sum()
        got = float(inverse_gamma_log_prior(jnp.asarray(psd), jnp.asarray(anchor), tau))
        assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("weight,total,anchor,tau", [(3.0, 12.0, 2.0, 20.0), (0.0, 0.0, 0.5, 1.5), (400.0, 9.0, 4.0, 5.0)])
def test_the_m_step_maximises_the_expected_log_posterior(weight, total, anchor, tau):
    """``(S + tau v0) / (w + tau)`` is the float64 maximiser of ``-w log v - S / v + log InvGamma(v)``."""
    def negative(log_v):
        v = np.exp(log_v)
        return -(-weight * np.log(v) - total / v + stats.invgamma.logpdf(v, tau - 1, scale=tau * anchor))

    best = np.exp(optimize.minimize_scalar(negative, bounds=(-10, 10), method="bounded",
                                           options={"xatol": 1e-10}).x)
    assert (total + tau * anchor) / (weight + tau) == pytest.approx(best, rel=1e-5)


def test_refinement_never_lowers_its_objective_and_moves_only_the_named_sources(separators, mismatch):
    _, refs = mismatch
    sep = separators["complex_gaussian"]._with_options(match_level=False)  # the level would scale every source
    refined = sep.refine(refs.sum(0))
    objective = refined.refinement_objective
    assert objective.shape == (8,) and np.all(np.diff(objective) >= -1e-5 * np.abs(objective[:-1])), objective
    assert objective[-1] > objective[0] + 1.0  # the mismatch is worth fitting
    for before, after in zip(sep.members, refined.members):
        assert after["tones"] is before["tones"]  # not named in inference.refine: untouched
        assert not np.allclose(after["noise"].emission["psd"], before["noise"].emission["psd"])
        np.testing.assert_array_equal(after["noise"].trans, before["noise"].trans)
    assert refined.options.refine_iter == 0 and refined.refined_sources == [] and not refined.fits_recording


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_refine_models_side_by_side_is_set_by_set_on_the_frames_read(separators, mismatch, stride):
    """The ensemble's sets refined on threads side by side give each set's own spectra and objective;
    at a stride, those of refinement on the frames read, with transitions ``A^stride`` and the prior
    weighing ``strength / stride`` frames."""
    from fhmm_ppl.audio.features import stft

    _, refs = mismatch
    sep = separators["complex_gaussian"]
    power = np.abs(stft(refs.sum(0), sep.options.stft)) ** 2
    batched, objective = refine_models(sep.members, ["noise"], power, sep.emission, 20.0, 4, stride)
    read = power[::stride]
    for member, together, values in zip(sep.members, batched, objective):
        trans = [np.linalg.multi_dot([m.trans.astype(np.float64)] * stride) if stride > 1 else m.trans
                 for m in member.values()]
        psd, alone = refine_spectra(tuple(jnp.log(jnp.asarray(m.init)) for m in member.values()),
                                    tuple(jnp.log(jnp.asarray(a, jnp.float32)) for a in trans),
                                    tuple(jnp.asarray(m.emission["psd"]) for m in member.values()),
                                    jnp.asarray(read, jnp.float32), read.shape[0], 20.0 / stride, 4, (1,))
        np.testing.assert_allclose(together["noise"].emission["psd"], psd[1], rtol=1e-4)
        np.testing.assert_allclose(values, alone, rtol=1e-5)
        np.testing.assert_array_equal(together["noise"].trans, member["noise"].trans)  # kept as trained


def test_strided_transitions_are_the_chain_seen_at_every_stride_th_frame():
    """Posteriors on every third frame with ``A^3`` are those of every frame with the frames between
    carrying no evidence (log-likelihood 0): the chain marginalised over the frames not read."""
    from fhmm_ppl import hmm

    rng = np.random.default_rng(3)
    chains = [(rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n), size=n)) for n in (3, 4)]
    read = rng.normal(size=(5, 3, 4)).astype(np.float32)
    every = np.zeros((13, 3, 4), np.float32)
    every[::3] = read
    log = lambda arrays: [jnp.log(jnp.asarray(a, jnp.float32)) for a in arrays]
    full = hmm.posteriors(log(c[0] for c in chains), log(c[1] for c in chains), jnp.asarray(every))
    seen = hmm.posteriors(log(c[0] for c in chains), log(strided(c[1], 3) for c in chains), jnp.asarray(read))
    for a, b in zip(full.marginals, seen.marginals):
        np.testing.assert_allclose(np.asarray(a)[::3], b, atol=1e-5)
    np.testing.assert_allclose(full.log_marginal, seen.log_marginal, rtol=1e-5)


@pytest.mark.parametrize("emission", ["complex_gaussian", "log_mel", "logmax"])
def test_unchanged_spectra_leave_every_parameter_as_trained(separators, emission):
    sep = separators[emission]
    kept = sep.members[0]["noise"].emission
    same = sep.emission.with_spectra(kept, kept["psd"])
    assert set(same) == set(kept)
    for key in kept:
        np.testing.assert_allclose(same[key], kept[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("emission", ["complex_gaussian", "log_mel", "logmax"])
def test_refinement_recovers_noise_the_training_did_not_cover(separators, mismatch, emission):
    """The noise the trained spectra miss leaks into the tones' estimate until refinement learns it."""
    _, refs = mismatch
    sep = separators[emission]
    mixture = refs.sum(0)
    plain = sep.__class__(sep.members, sep.sample_rate, sep.options.replace(refine_iter=0))
    sdr = {label: bss_eval(refs, np.stack(list(s.separate(mixture).values()))).sdr
           for label, s in (("plain", plain), ("refined", sep))}
    assert sdr["refined"][0] > sdr["plain"][0] + 2.0, sdr


def test_a_stronger_anchor_moves_the_spectra_less(separators, mismatch):
    _, refs = mismatch
    sep = separators["log_mel"]
    trained = sep.members[0]["noise"].emission["psd"]
    moved = []
    for strength in (2.5, 20.0, 1e3, 1e6):
        refined = sep.__class__(sep.members, sep.sample_rate, sep.options.replace(refine_strength=strength))
        psd = refined.refine(refs.sum(0)).members[0]["noise"].emission["psd"]
        moved.append(float(np.mean(np.abs(np.log(psd / trained)))))
    assert moved == sorted(moved, reverse=True) and moved[-1] < moved[0] / 10, moved


def test_separate_is_refine_then_separate_and_a_refined_separator_saves(separators, mismatch, tmp_path):
    _, refs = mismatch
    sep = separators["log_mel"]
    mixture = refs.sum(0)
    refined = sep.refine(mixture)
    direct = sep.separate(mixture)
    for name, wave in refined.separate(mixture).items():
        np.testing.assert_allclose(wave, direct[name], atol=1e-6)
    loaded = load(refined.save(tmp_path / "refined"))
    assert loaded.refined_sources == []
    np.testing.assert_allclose(loaded.separate(mixture)["tones"], direct["tones"], atol=1e-5)


def test_refinement_settings():
    assert SeparatorOptions().refine_iter == 3  # log-mel's default
    assert SeparatorOptions.from_flat(emission="complex_gaussian").refine_iter == 0
    assert SeparatorOptions.from_flat(refine="hiss").inference.refine == ["hiss"]
    with pytest.raises(ValueError, match="refine_strength"):
        SeparatorOptions.from_flat(refine_strength=1.0)  # an inverse gamma needs tau > 1
    with pytest.raises(ValueError, match="refine_iter"):
        SeparatorOptions.from_flat(refine_iter=-1)
    assert SeparatorOptions().inference.refine_stride == 2
    with pytest.raises(ValueError, match=r"refine_strength \(3\) must exceed refine_stride \(4\)"):
        SeparatorOptions.from_flat(refine_strength=3.0, refine_stride=4)  # 3 / 4 frames read: no inverse gamma
    assert SeparatorOptions.from_flat(refine_strength=2.0, refine_iter=0).inference.refine_strength == 2.0  # not refining
    with pytest.raises(ValueError, match="refine_stride"):
        SeparatorOptions.from_flat(refine_stride=0)


def test_refinement_is_refused_where_the_emission_cannot_take_it(monkeypatch):
    from fhmm_ppl.separation.emissions import EMISSIONS
    from fhmm_ppl.separation.options import check_separation

    monkeypatch.setattr(EMISSIONS["logmax"], "refinable", False)
    options = SeparatorOptions.from_flat(emission="logmax")  # refine_iter unset: the emission's 0
    with pytest.raises(SettingError, match="refinement on the mixture is available for the .*, not logmax"):
        check_separation(options.model, options.inference.model_copy(update={"refine_iter": 3}))


def test_refining_a_source_the_separator_lacks_is_an_error_the_default_is_skipped(separators, mismatch):
    train, _ = mismatch
    with pytest.raises(ValueError, match="inference.refine names hiss, not one of the sources"):
        fit_separator(train, RATE, n_states=2, max_iter=1, refine=["hiss"])
    sep = separators["complex_gaussian"]
    with pytest.raises(ValueError, match="names hiss"):
        Separator(sep.members, RATE, sep.options.replace(refine=["hiss", "noise"]))
    pairs = Separator([{"a": m["tones"], "b": m["noise"]} for m in sep.members], RATE, sep.options)
    assert pairs.refined_sources == []  # the default names "noise", which a pair of talkers lacks


def test_refinement_needs_exact_inference(mismatch):
    train, _ = mismatch
    three = {**train, "hum": train["noise"]}
    with pytest.raises(ValueError, match="refining sources on the mixture needs exact inference, but the plan"):
        fit_separator(three, RATE, emission="complex_gaussian", n_states=64, max_iter=1, refine_iter=2)


def test_a_separator_saved_before_refinement_loads_without_it(separators, tmp_path):
    import json

    folder = separators["log_mel"].save(tmp_path / "now")
    assert load(folder).options.refine_iter == 8 and load(folder).refined_sources == ["noise"]
    meta = json.loads((folder / "separator.json").read_text())
    meta["format_version"] = 7
    for key in ("refine", "refine_iter", "refine_strength"):
        del meta["options"]["inference"][key]
    (folder / "separator.json").write_text(json.dumps(meta))
    old = load(folder)  # format 7 separated with the spectra as trained, and still does
    assert old.options.refine_iter == 0 and old.refined_sources == []


def test_a_separator_saved_before_strides_refines_on_every_frame(separators, tmp_path):
    import json

    folder = separators["log_mel"].save(tmp_path / "now")
    assert load(folder).options.inference.refine_stride == 2
    meta = json.loads((folder / "separator.json").read_text())
    meta["format_version"] = 10
    del meta["options"]["inference"]["refine_stride"]
    (folder / "separator.json").write_text(json.dumps(meta))
    assert load(folder).options.inference.refine_stride == 1  # format 10 read every frame, and still does


def test_the_cli_refines_as_the_separator_says_or_as_told(separators, mismatch, tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app

    sep, mixture = separators["log_mel"], mismatch[1].sum(0)
    folder = sep.save(tmp_path / "model")
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    for args, expected in (([], sep), (["--refine-iter", "0"], sep.with_refinement(0)),
                           (["--refine", "tones", "--refine-iter", "2"], sep.with_refinement(2, "tones"))):
        out = tmp_path / f"out{len(args)}"
        result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "-o", str(out), *args])
        assert result.exit_code == 0, result.output
        wave, _ = sf.read(out / "mix_tones.wav", dtype="float32")
        np.testing.assert_allclose(wave, expected.separate(mixture)["tones"], atol=1e-5)
    assert sep.with_refinement(0).refined_sources == [] and sep.with_refinement(2, "tones").refined_sources == ["tones"]
    bad = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "--refine", "hiss"])
    assert bad.exit_code != 0 and "inference.refine names hiss" in bad.output


def streamed(separator, mixture, size: int = 6400) -> np.ndarray:
    """The tones' estimate of ``separator.stream`` at a 0.5 s lag, ``mixture`` fed in chunks of ``size`` samples."""
    return np.concatenate([p["tones"] for p in separator.stream([mixture[i:i + size] for i in range(0, len(mixture), size)],
                                                                 lag=0.5)])


def test_a_streamed_file_is_refined_on_its_first_seconds(separators, mismatch, tmp_path, monkeypatch):
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app
    from fhmm_ppl.separation import files

    sep, mixture = separators["log_mel"], mismatch[1].sum(0)
    folder = sep.save(tmp_path / "model")
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    monkeypatch.setattr(files, "REFINE_HEAD", 1.5)
    args = ["separate", str(folder), str(tmp_path / "mix.wav"), "--stream", "--lag", "0.5", "--block", "0.4"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    wave, _ = sf.read(tmp_path / "out" / "mix_tones.wav", dtype="float32")

    head = sep.refine(mixture[: int(1.5 * RATE)])
    np.testing.assert_allclose(wave, streamed(head, mixture), atol=1e-5)
    assert np.abs(wave - streamed(sep, mixture)).max() > 1e-3  # as trained, the stream would differ
    for extra in (["--refine-iter", "0"], ["--fit-seconds", "0"]):
        result = CliRunner().invoke(app, [*args, *extra, "-o", str(tmp_path / "plain")])
        wave, _ = sf.read(tmp_path / "plain" / "mix_tones.wav", dtype="float32")
        np.testing.assert_allclose(wave, streamed(sep, mixture), atol=1e-5)
    result = CliRunner().invoke(app, [*args, "--fit-seconds", "-1"])
    assert result.exit_code == 1 and "--fit-seconds must be 0 or more" in result.output


def test_standard_input_is_fitted_on_its_first_seconds_held_back(separators, mismatch, tmp_path, monkeypatch):
    """A pipe cannot be read twice: its first ``PIPE_HEAD`` seconds are held while the separator fits
    itself to them, then streamed; the output is the fitted separator's stream, of the input's length."""
    import os

    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app
    from fhmm_ppl.separation import files

    sep, mixture = separators["log_mel"], mismatch[1].sum(0)
    folder = sep.save(tmp_path / "model")
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    monkeypatch.setattr(files, "PIPE_HEAD", 1.3)

    def piped(*extra):
        saved = os.dup(0)
        with open(tmp_path / "mix.wav", "rb") as feed:  # the file as the process's standard input
            os.dup2(feed.fileno(), 0)
            try:
                result = CliRunner().invoke(app, ["separate", str(folder), "-", "--lag", "0.5", "--block", "0.4",
                                                  "-o", str(tmp_path / "out"), *extra])
            finally:
                os.dup2(saved, 0)
                os.close(saved)
        assert result.exit_code == 0, result.output
        return sf.read(tmp_path / "out" / "stdin_tones.wav", dtype="float32")[0]

    for extra, expected in (((), sep.refine(mixture[: int(1.3 * RATE)])), (("--fit-seconds", "2"), sep.refine(mixture[: 2 * RATE])),
                            (("--fit-seconds", "0"), sep)):
        out = piped(*extra)
        assert out.shape == mixture.shape
        np.testing.assert_allclose(out, streamed(expected, mixture), atol=1e-5)
    assert np.abs(piped() - streamed(sep, mixture)).max() > 1e-3
    blocks = [mixture[i:i + 3200] for i in range(0, len(mixture), 3200)]  # --block 0.4
    live = np.concatenate([p["tones"] for p in sep.stream(blocks, lag=0.5, fit_seconds=1.3, live=True)])
    np.testing.assert_allclose(piped("--live"), live, atol=1e-5)
    result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "--live"])
    assert result.exit_code == 1 and "--live is for streams: pass --stream" in result.output


def test_fitted_on_head_replays_every_block_and_fits_only_where_it_can(separators, mismatch):
    from fhmm_ppl.separation.streaming import fitted_on_head

    sep, mixture = separators["log_mel"], mismatch[1].sum(0)
    pieces = [mixture[i:i + 3000] for i in range(0, len(mixture), 3000)]
    fitted, blocks = fitted_on_head(sep, iter(pieces), 1.0)
    np.testing.assert_array_equal(np.concatenate(list(blocks)), mixture)
    assert fitted.options.refine_iter == 0 and fitted.recording_level is not None
    np.testing.assert_allclose(fitted.separate(mixture)["tones"], sep.refine(mixture[:RATE]).separate(mixture)["tones"])
    for separator, seconds, chunks in ((sep, 0.0, pieces), (sep.with_refinement(0).with_level_matching(False), 1.0, pieces),
                                       (sep, 1.0, [mixture[:100]])):  # nothing to fit, or not a frame of audio
        same, blocks = fitted_on_head(separator, iter(chunks), seconds)
        assert same is separator and np.concatenate(list(blocks)).shape[0] == sum(len(c) for c in chunks)


def test_a_python_stream_fits_itself_to_its_first_seconds_and_then_streams_from_the_start(separators, mismatch):
    """``Separator.stream(..., fit_seconds=S)`` is the CLI's head in Python: nothing comes out until S
    seconds are in, then the stream of the separator fitted to them, from the first sample."""
    sep, mixture = separators["log_mel"], mismatch[1].sum(0)
    pcm = np.round(np.clip(mixture, -1, 1) * 32767).astype(np.int16)  # integer PCM, as a sound card gives it
    pulled = []

    def chunks():
        for i in range(0, len(pcm), 4000):
            pulled.append(i)
            yield pcm[i:i + 4000]

    pieces = sep.stream(chunks(), lag=0.5, fit_seconds=1.2)
    assert not pulled  # a generator: nothing is read before the first piece is asked for
    first = next(pieces)
    assert len(pulled) == -(-int(1.2 * RATE) // 4000)  # the head's chunks were all read first
    out = np.concatenate([first["tones"]] + [p["tones"] for p in pieces])
    floats = pcm.astype(np.float32) / 32768
    fitted = sep.refine(floats[: int(1.2 * RATE)])
    want = streamed(fitted, floats, 4000)
    assert out.shape == mixture.shape
    np.testing.assert_allclose(out, want, atol=1e-5)
    plain = streamed(sep, pcm, 4000)
    assert np.abs(out - plain).max() > 1e-3  # as trained, it differs
    for bad, message in ((-1.0, "fit_seconds must be 0 or more"), (float("nan"), "fit_seconds must be 0 or more"),
                         ("2", "fit_seconds must be 0 or more")):
        with pytest.raises(ValueError, match=message):
            sep.stream(chunks(), fit_seconds=bad)
    with pytest.raises(ValueError, match="lag"):
        sep.stream(chunks(), lag=-1.0, fit_seconds=1.0)  # at the call, not at the first piece


@pytest.mark.parametrize("size", [4000, 333])
def test_a_live_stream_starts_as_trained_and_hands_over_to_the_fitted_separator(separators, mismatch, size):
    """``live=True``: a piece per chunk from the first on, as trained; once the head is in, the fitted
    separator's stream (which ran through the head again) from there, the two crossfaded over a frame."""
    sep, mixture = separators["log_mel"], mismatch[1].sum(0)
    chunks = [mixture[i:i + size] for i in range(0, len(mixture), size)]
    head = int(1.2 * RATE)
    n_head = -(-head // size)  # chunks read by the end of the head
    pieces = [p["tones"] for p in sep.stream(iter(chunks), lag=0.5, fit_seconds=1.2, live=True)]
    assert len(pieces) == len(chunks) + 1  # one per chunk, then the rest
    out = np.concatenate(pieces)
    assert out.shape == mixture.shape
    plain, fitted = streamed(sep, mixture, size), streamed(sep.refine(mixture[:head]), mixture, size)
    handover = sum(len(p) for p in pieces[:n_head])  # what came out before the head was in
    fade = sep.options.stft.n_fft
    assert 0 < handover < n_head * size - int(0.5 * RATE)  # output started early; the lag holds back the rest
    np.testing.assert_allclose(out[:handover], plain[:handover], atol=1e-5)
    np.testing.assert_allclose(out[handover + fade:], fitted[handover + fade:], atol=1e-5)
    w = (np.arange(fade) + 0.5) / fade
    np.testing.assert_allclose(out[handover:handover + fade],
                               (1 - w) * plain[handover:handover + fade] + w * fitted[handover:handover + fade], atol=1e-5)
    assert np.abs(fitted - plain)[handover:].max() > 1e-3  # the two do differ there
    short = [mixture[:3000], mixture[3000:5000]]  # ends before the head: fitted to what there is
    out = np.concatenate([p["tones"] for p in sep.stream(iter(short), lag=0.5, fit_seconds=1.2, live=True)])
    assert out.shape == (5000,)
    nothing = list(sep.stream(iter([]), lag=0.5, fit_seconds=1.2, live=True))  # as a plain stream: one empty piece
    assert len(nothing) == 1 and nothing[0]["tones"].shape == (0,)
    with pytest.raises(ValueError, match="fit_seconds must be 0 or more"):
        sep.stream(iter(chunks), fit_seconds=-1.0, live=True)
