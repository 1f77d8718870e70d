"""The running average of the noise's power in the masks (``separation.averaging``)."""

import numpy as np
import pytest
from test_separation import RATE, high_noise, low_tones
from test_warps import steady

from fhmm_ppl.audio.features import stft
from fhmm_ppl.separation import Separator, fit_separator, load
from fhmm_ppl.separation.averaging import CEILINGS, PowerAverage, level_ceilings, source_indices
from fhmm_ppl.settings import (
    AVERAGE_SECONDS,
    CEILING_BOUND,
    CEILING_FLOOR,
    CEILING_QUANTILE,
    CEILING_WARMUP,
    REPEATING_AVERAGE_SECONDS,
)


def reference_average(masks, magnitude, sources, frames, rule="presence", ceilings=None):
    """The averaged masks written out bin by bin and frame by frame in float64. ``presence``: the level
    is the first frame's ``e_0 = m_0^2 |y_0|^2`` (weight 1) and every later frame's ``|y|^2`` weighted
    by ``w = m^2``, averaged while the weights sum to at most ``frames``; then
    ``a_t = a_{t-1} + w_t c (|y_t|^2 - a_{t-1})``, ``c = 1 / frames``. With ``ceilings`` (``{source
    index: (F,)}``), once the weights reach ``CEILING_WARMUP`` a frame's ``|y|^2`` counts as at most
    its ceiling times the level before it, and the level is at least the one without ceilings (kept
    beside it) over ``CEILING_BOUND``.
    ``share``: ``a_t = (1 - c) a_{t-1} + c e_t`` from ``a_0 = e_0`` for ``e = m^2 |y|^2``. Then each
    power's share, the averaged sources' level in their place."""
    c = 1.0 / frames
    masks = np.asarray(masks, np.float64)
    mixture = np.asarray(magnitude, np.float64) ** 2
    power = masks ** 2 * mixture
    out = masks.copy()
    n_sources, n_frames, n_bins = masks.shape
    ceilings = ceilings or {}
    for f in range(n_bins):
        for k in sources:
            ceiling = float(ceilings[k][f]) if k in ceilings else np.inf
            level, free, weights, weighted = 0.0, 0.0, 0.0, 0.0
            for t in range(n_frames):
                if rule == "share":
                    level = power[k, 0, f] if t == 0 else (1 - c) * level + c * power[k, t, f]
                    power[k, t, f] = level
                    continue
                if t == 0:
                    level = free = weighted = power[k, 0, f]
                    weights = 1.0
                else:
                    w = masks[k, t, f] ** 2
                    seen = weights + w
                    x = mixture[t, f]
                    if seen >= CEILING_WARMUP and level > 0 and ceiling < np.inf:
                        x = min(x, ceiling * level)
                    if k not in ceilings and seen <= frames:  # the weighted mean so far
                        weighted += w * x
                        level = weighted / seen
                    else:  # the same as a recursion, then the recursive average
                        step = w / seen if seen <= frames else w * c
                        level += step * (x - level)
                        free += step * (mixture[t, f] - free)
                        level = max(level, free / CEILING_BOUND)
                    weights = seen
                power[k, t, f] = level
    total = power.sum(0)
    return np.where(total > 0, power / np.where(total > 0, total, 1.0), out)


@pytest.fixture
def masks_and_magnitude():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 50, 7)) ** 3
    masks = (raw / raw.sum(0)).astype(np.float32)
    magnitude = rng.random((50, 7)).astype(np.float32)
    magnitude[10:12, 3] = 0.0  # silent bins keep their masks
    return masks, magnitude


@pytest.mark.parametrize("rule", ["presence", "share"])
@pytest.mark.parametrize("sources", [(1,), (0, 2)])
def test_average_matches_the_frame_by_frame_reference(masks_and_magnitude, sources, rule):
    masks, magnitude = masks_and_magnitude
    out = PowerAverage(sources, 6.0, rule)(masks, magnitude)
    np.testing.assert_allclose(out, reference_average(masks, magnitude, sources, 6.0, rule), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    assert np.abs(out - masks).max() > 0.1


@pytest.mark.parametrize("rule", ["presence", "share"])
def test_blocks_of_any_size_give_the_whole_mixture_s_masks(masks_and_magnitude, rule):
    """Streaming applies the average block by block (empty blocks too): the same numbers as one call."""
    masks, magnitude = masks_and_magnitude
    whole = PowerAverage((1,), 6.0, rule)(masks, magnitude)
    average, parts, start = PowerAverage((1,), 6.0, rule), [], 0
    for size in (1, 0, 7, 16, 3, 23):
        parts.append(average(masks[:, start:start + size], magnitude[start:start + size]))
        start += size
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


def test_the_level_takes_no_pull_above_its_ceiling(masks_and_magnitude):
    """With ceilings (one source with, one without), the capped recursion matches the float64
    reference, block by block as in one call; a ceiling nothing reaches changes nothing."""
    masks, magnitude = masks_and_magnitude
    magnitude = magnitude.copy()
    magnitude[30:33] *= 6.0  # frames far above the level: the speech through the noise's mask
    ceilings = [np.linspace(1.5, 12.0, 7).astype(np.float32), None]
    out = PowerAverage((1, 2), 6.0, ceilings=ceilings)(masks, magnitude)
    want = reference_average(masks, magnitude, (1, 2), 6.0, ceilings={1: ceilings[0]})
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    plain = PowerAverage((1, 2), 6.0)(masks, magnitude)
    assert np.abs(out[1] - plain[1]).max() > 0.05  # the capped source's level changed...
    np.testing.assert_allclose(out[2] * plain[0], plain[2] * out[0], rtol=1e-4, atol=1e-9)  # ...the other's did not
    average, parts, start = PowerAverage((1, 2), 6.0, ceilings=ceilings), [], 0
    for size in (1, 0, 7, 16, 3, 23):
        parts.append(average(masks[:, start:start + size], magnitude[start:start + size]))
        start += size
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), out)
    high = [np.full(7, 1e9, np.float32), None]
    np.testing.assert_allclose(PowerAverage((1, 2), 6.0, ceilings=high)(masks, magnitude), plain, rtol=1e-6)
    with pytest.raises(ValueError, match="ceilings have 5 frequency bins, the mixture's STFT 7"):
        PowerAverage((1,), 6.0, ceilings=[np.ones(5)])(masks, magnitude)


def test_a_level_that_starts_far_too_low_still_rises():
    """Silence, then noise: the capped level could climb only by its ceiling a frame, so it is held at
    least at the uncapped level over ``CEILING_BOUND``, and the two meet once the noise settles."""
    masks = np.full((2, 400, 1), 0.5, np.float32)
    magnitude = np.full((400, 1), 1e-4, np.float32)
    magnitude[100:] = 1.0
    average = PowerAverage((1,), 50.0, ceilings=[np.array([CEILING_FLOOR], np.float32)])
    out = average(masks, magnitude)
    free = PowerAverage((1,), 50.0)(masks, magnitude)
    level = lambda m: 0.25 * m[1, :, 0] / m[0, :, 0]  # noqa: E731  the level from the masks, speech power 0.25
    assert np.all(level(out) >= level(free) / CEILING_BOUND * (1 - 1e-4))
    assert level(out)[150] < level(free)[150] and abs(level(out)[-1] / level(free)[-1] - 1) < 0.1


def test_level_ceilings_are_how_far_the_noise_rises_above_its_level():
    rng = np.random.default_rng(7)
    power = np.abs(rng.standard_normal((3000, 4)) + 1j * rng.standard_normal((3000, 4))) ** 2  # Gaussian noise
    power[::50, 2] *= 40.0  # one bin bursts every 50 frames
    power[:, 3] = 0.0  # and one is silent
    ceilings = level_ceilings(power, 30.0)
    levels = PowerAverage((0,), 30.0)._presence(np.ones((1, 3000, 4)), power, power[:1])[0]
    start = int(CEILING_WARMUP) - 1
    ratio = power[start:, 2] / levels[start - 1:-1, 2]
    np.testing.assert_allclose(ceilings[2], np.quantile(ratio, CEILING_QUANTILE), rtol=1e-5)
    assert ceilings[2] > 15.0  # the bursts are the noise's own: no ceiling under them
    np.testing.assert_array_equal(ceilings[[0, 1, 3]], CEILING_FLOOR)  # Gaussian bins rarely pass the floor
    assert level_ceilings(power[:start], 30.0) is None  # too short for one ratio past the warm-up


def test_no_average_leaves_the_masks(masks_and_magnitude):
    masks, magnitude = masks_and_magnitude
    np.testing.assert_array_equal(PowerAverage((), 6.0)(masks, magnitude), masks)  # no source named
    np.testing.assert_array_equal(PowerAverage((1,), 0.0)(masks, magnitude), masks)  # average_seconds 0
    assert source_indices(["noise"], ["speech", "noise"]) == (1,)
    assert source_indices(["noise"], ["talker1", "talker2"]) == ()
    with pytest.raises(ValueError, match="unknown averaging rule 'mean'; one of presence, share"):
        PowerAverage((1,), 6.0, "mean")


def test_the_presence_rule_tracks_a_noise_level_through_speech():
    """Where the masks give a bin to the speech, the noise's level holds at what the noise-only frames
    showed instead of following the little power the masks leave it: the masks' noise share in a
    speech frame is then the level's share of the frame, not the frame's own guess."""
    masks = np.zeros((2, 40, 1), np.float32)
    masks[1] = 1.0  # noise alone...
    masks[:, 20:30] = [[[0.9]], [[0.1]]]  # ...then speech dominates, the mixture 10 times louder
    magnitude = np.ones((40, 1), np.float32)
    magnitude[20:30] = np.sqrt(10.0)
    out = PowerAverage((1,), 8.0)(masks, magnitude)
    level = 1.0 + 0.01 * (10.0 - 1.0) / 8.0  # the first speech frame barely moves the level (weights past 8)
    np.testing.assert_allclose(out[1, 20, 0], level / (level + 0.81 * 10.0), rtol=1e-5)
    own = 0.1 ** 2 * 10 / (0.1 ** 2 * 10 + 0.81 * 10)  # the frames' own guess: 0.012
    assert np.all(out[1, 20:30, 0] > 0.11)  # the level holds through the speech
    share = PowerAverage((1,), 8.0, "share")(masks, magnitude)
    assert own < share[1, 29, 0] < 0.06  # the share rule's level sinks towards the frames' guess


def test_a_separator_averages_its_noise_and_refuses_a_missing_source():
    rng = np.random.default_rng(3)
    sep = fit_separator({"tones": low_tones(rng, 4), "noise": high_noise(rng, 4)}, RATE, n_states=4, max_iter=5,
                        emission="complex_gaussian", n_models=1, average_seconds=0.5)
    spec = stft(low_tones(rng, 2) + high_noise(rng, 2), sep.options.stft)
    plain = Separator(sep.members, RATE, sep.options.replace(average_seconds=0.0)).gains(spec)
    frames = 0.5 * RATE / sep.options.features.hop_length
    assert CEILINGS not in sep.models["tones"].emission  # the noise's level alone is tracked, and capped
    ceilings = {1: sep.models["noise"].emission[CEILINGS]}
    np.testing.assert_allclose(sep.gains(spec), reference_average(plain, np.abs(spec), (1,), frames, ceilings=ceilings),
                               atol=1e-5)
    share = Separator(sep.members, RATE, sep.options.replace(average_rule="share")).gains(spec)
    np.testing.assert_allclose(share, reference_average(plain, np.abs(spec), (1,), frames, "share"), atol=1e-5)
    # streamed (a lag covering the mixture): the offline masks' separation, average included
    mixture = low_tones(rng, 2) + high_noise(rng, 2)
    streamed = np.concatenate([part["tones"] for part in sep.stream(np.array_split(mixture, 9), lag=5.0)])
    np.testing.assert_allclose(streamed, sep.separate(mixture)["tones"], atol=1e-4)
    # named explicitly, a source the separator lacks is an error; the default is skipped where missing
    with pytest.raises(ValueError, match="inference.average names hiss, not one of the sources \\(tones, noise\\)"):
        Separator(sep.members, RATE, sep.options.replace(average=["hiss"]))
    with pytest.raises(ValueError, match="inference.average names hiss"):  # before any training
        fit_separator({"tones": low_tones(rng, 1)}, RATE, unknown=["noise"], average=["hiss"], max_iter=1)
    pair = {"a": sep.members[0]["tones"], "b": sep.members[0]["noise"]}
    assert Separator(pair, RATE, sep.options).power_average().sources == ()


def test_fit_separator_holds_a_repeating_noise_s_level_longer(tmp_path):
    rng = np.random.default_rng(6)
    light = dict(n_states=3, max_iter=3, emission="complex_gaussian", n_models=1, n_fft=256, hop_length=64)
    tones = low_tones(rng, 3)

    def seconds(sources, **options):
        return fit_separator(sources, RATE, **light, **options).options.inference.average_seconds

    white = steady(rng, 3)  # repeats its long-term spectrum (reconstruction.repetition)
    changing = np.concatenate([steady(rng, 1.5), high_noise(rng, 1.5)])  # white, then a band
    assert seconds({"tones": tones, "noise": white}) == REPEATING_AVERAGE_SECONDS == 5.0
    assert seconds({"tones": tones, "noise": changing}) == AVERAGE_SECONDS == 0.5
    assert seconds({"a": tones, "b": white}) == AVERAGE_SECONDS  # no noise: nothing is averaged anyway
    assert seconds({"tones": tones, "noise": white}, average_seconds=1.0) == 1.0  # given, kept
    sep = fit_separator({"tones": tones, "noise": white}, RATE, **light)
    assert load(sep.save(tmp_path / "held")).power_average().frames == 5.0 * RATE / sep.options.features.hop_length
    unset = Separator(sep.members, RATE, sep.options.replace(average_seconds=None))  # built without fit_separator
    assert unset.power_average().frames == AVERAGE_SECONDS * RATE / sep.options.features.hop_length


def test_fit_separator_keeps_the_tracked_noise_s_ceilings(tmp_path):
    """Learnt from the noise's training audio at the separator's STFT and time constant, saved with
    it; none for the speech, none when asked for none; a format-16 folder (before them) has none."""
    import json

    rng = np.random.default_rng(6)
    sources = {"tones": low_tones(rng, 3), "noise": high_noise(rng, 3)}
    light = dict(n_states=3, max_iter=3, emission="complex_gaussian", n_models=2)
    sep = fit_separator(sources, RATE, **light)
    frames = sep.options.inference.tracked_seconds * RATE / sep.options.features.hop_length
    want = level_ceilings(np.abs(stft(sources["noise"], sep.options.stft)) ** 2, frames)
    for member in sep.members:
        np.testing.assert_array_equal(member["noise"].emission[CEILINGS], want)
        assert CEILINGS not in member["tones"].emission
    np.testing.assert_array_equal(sep.power_average().ceilings, want[None])
    assert sep.refine(sources["noise"][:RATE]).power_average().ceilings is not None  # refined, it keeps them
    folder = sep.save(tmp_path / "sep")
    assert load(folder).options.training.level_ceilings
    np.testing.assert_array_equal(load(folder).power_average().ceilings, want[None])
    none = fit_separator(sources, RATE, level_ceilings=False, **light)
    assert none.power_average().ceilings is None and not none.options.training.level_ceilings
    meta = json.loads((folder / "separator.json").read_text())
    del meta["options"]["training"]["level_ceilings"]
    (folder / "separator.json").write_text(json.dumps(meta | {"format_version": 16}))
    assert not load(folder).options.training.level_ceilings


def test_a_separator_saved_before_averaging_loads_without_it(tmp_path):
    import json

    rng = np.random.default_rng(4)
    sep = fit_separator({"tones": low_tones(rng, 3), "noise": high_noise(rng, 3)}, RATE, n_states=3, max_iter=3,
                        emission="complex_gaussian", n_models=1)
    folder = sep.save(tmp_path / "now")
    assert load(folder).options.inference.average_seconds == 0.5 and load(folder).power_average().sources == (1,)
    assert load(folder).power_average().rule == "presence"
    meta = json.loads((folder / "separator.json").read_text())
    meta["format_version"] = 9
    del meta["options"]["inference"]["average_rule"]
    (folder / "separator.json").write_text(json.dumps(meta))
    assert load(folder).power_average().rule == "share"  # format 9 averaged the masks' power, and still does
    meta["format_version"] = 8
    for key in ("average", "average_seconds"):
        del meta["options"]["inference"][key]
    (folder / "separator.json").write_text(json.dumps(meta))
    assert load(folder).options.inference.average_seconds == 0.0  # format 8 separated frame by frame, and still does


def test_the_cli_averages_as_the_separator_says_or_as_told(tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app

    rng = np.random.default_rng(5)
    sep = fit_separator({"tones": low_tones(rng, 3), "noise": high_noise(rng, 3)}, RATE, n_states=3, max_iter=3,
                        emission="complex_gaussian", n_models=1)
    folder = sep.save(tmp_path / "model")
    mixture = 0.5 * (low_tones(rng, 2) + high_noise(rng, 2))
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    for args, expected in (([], sep), (["--average-seconds", "0"], sep.with_average(0.0)),
                           (["--average-seconds", "1.5"], sep.with_average(1.5))):
        out = tmp_path / f"out{'-'.join(args)}"
        result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "-o", str(out), *args])
        assert result.exit_code == 0, result.output
        wave, _ = sf.read(out / "mix_tones.wav", dtype="float32")
        np.testing.assert_allclose(wave, expected.separate(mixture)["tones"], atol=1e-5)
    assert np.abs(sep.with_average(0.0).separate(mixture)["tones"] - sep.separate(mixture)["tones"]).max() > 1e-3
    bad = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "--average-seconds", "-1"])
    assert bad.exit_code != 0 and "average_seconds" in bad.output and len(bad.output.strip().splitlines()) == 1
