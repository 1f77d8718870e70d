"""Semi-supervised separation: the unknown chains' exact EM held to brute force, known chains
untouched, a monotone objective, the API (adapt, separate, save/load), semi-supervised NMF."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from test_separation import RATE, high_noise, low_tones

from fhmm_ppl.audio.features import stft
from fhmm_ppl.audio.tasks import demo_task
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import Separator, fit_separator, load
from fhmm_ppl.separation.adaptation import Adaptation, adapt_models, e_step, m_step, unknown_spec
from fhmm_ppl.separation.baselines import fit_semi_supervised_nmf, kl_divergence


def brute_log_marginal(log_init, log_trans, psd, power):
    """log p(y) of a complex-Gaussian FHMM by enumerating every joint path (float64 numpy)."""
    n_states = [v.shape[0] for v in psd]
    joint = list(itertools.product(*[range(n) for n in n_states]))
    scores = []
    for path in itertools.product(joint, repeat=power.shape[0]):
        score = 0.0
        for t, s in enumerate(path):
            var = sum(psd[k][s[k]] for k in range(len(psd)))
            score += -np.sum(np.log(np.pi * var) + power[t] / var)
            for k in range(len(psd)):
                score += log_init[k][s[k]] if t == 0 else log_trans[k][path[t - 1][k], s[k]]
        scores.append(score)
    return logsumexp(scores)


@pytest.fixture
def tiny(rng):
    """A two-chain (2 x 2 states) problem of 3 frames and 2 bins, chain 1 the unknown one."""
    probs = lambda shape: rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])  # noqa: E731
    log_init = [np.log(probs((2,))), np.log(probs((2,)))]
    log_trans = [np.log(probs((2, 2))), np.log(probs((2, 2)))]
    psd = [rng.uniform(0.5, 2.0, (2, 2)), rng.uniform(0.5, 2.0, (2, 2))]
    power = rng.exponential(2.0, (3, 2))
    return log_init, log_trans, psd, power


def run_e_step(log_init, log_trans, psd, power):
    as32 = lambda xs: tuple(jnp.asarray(x, jnp.float32) for x in xs)  # noqa: E731
    return e_step(as32(log_init), as32(log_trans), as32(psd), jnp.asarray(power, jnp.float32), power.shape[0], (1,))


def test_e_step_log_marginal_matches_enumeration(tiny):
    log_marg, _ = run_e_step(*tiny)
    np.testing.assert_allclose(float(log_marg), brute_log_marginal(*tiny), rtol=1e-5)


@pytest.mark.parametrize("n_chains,unknown", [(2, (1,)), (2, (0,)), (3, (1,)), (3, (2, 0))])
def test_expected_power_is_the_gradient_of_the_log_marginal(rng, n_chains, unknown):
    """Fisher's identity: d log p(y) / d v_i = (sum_i - weight_i v_i) / v_i^2 with the E-step's
    expected source powers; held to central differences of the enumerated log marginal, for every
    unknown chain wherever it sits among the chains."""
    probs = lambda shape: rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])  # noqa: E731
    log_init = [np.log(probs((2,))) for _ in range(n_chains)]
    log_trans = [np.log(probs((2, 2))) for _ in range(n_chains)]
    psd = [rng.uniform(0.5, 2.0, (2, 2)) for _ in range(n_chains)]
    power = rng.exponential(2.0, (3, 2))
    as32 = lambda xs: tuple(jnp.asarray(x, jnp.float32) for x in xs)  # noqa: E731
    _, stats = e_step(as32(log_init), as32(log_trans), as32(psd), jnp.asarray(power, jnp.float32), 3, unknown)
    for k, st in zip(unknown, stats):
        v = psd[k]
        from_stats = (np.asarray(st["sum"]) - np.asarray(st["weight"])[:, None] * v) / v**2
        numeric = np.zeros_like(v)
        for i, f in np.ndindex(v.shape):
            step = 1e-5 * v[i, f]
            up, down = v.copy(), v.copy()
            up[i, f] += step
            down[i, f] -= step
            numeric[i, f] = (brute_log_marginal(log_init, log_trans, psd[:k] + [up] + psd[k + 1:], power)
                             - brute_log_marginal(log_init, log_trans, psd[:k] + [down] + psd[k + 1:], power)) / (2 * step)
        np.testing.assert_allclose(from_stats, numeric, rtol=2e-3, atol=1e-4)


def test_m_step_maximises_the_expected_complete_log_posterior(tiny):
    """With an inverse-gamma prior on the spectra, each M-step spectrum is the numerical maximiser of
    ``-weight log v - sum / v + log InvGamma(v)``."""
    _, (stats,) = run_e_step(*tiny)
    spec = unknown_spec(2, {"psd": {"name": "inverse_gamma", "params": {"concentration": 2.0, "rate": 0.5}}})
    _, _, psd = m_step(stats, jnp.asarray(tiny[2][1], jnp.float32), spec)
    weight, total = np.asarray(stats["weight"], np.float64), np.asarray(stats["sum"], np.float64)
    for i, f in np.ndindex(psd.shape):
        def negative(log_v):
            v = np.exp(log_v)
            return weight[i] * log_v + total[i, f] / v + (2.0 + 1.0) * log_v + 0.5 / v

        best = minimize_scalar(negative, bounds=(-10, 10), method="bounded", options={"xatol": 1e-9})
        np.testing.assert_allclose(float(psd[i, f]), np.exp(best.x), rtol=1e-4)


def test_shared_shape_m_step_reaches_the_maximum_of_its_convex_objective(rng):
    """The shared-shape prior's M-step against a float64 optimiser over ``(log g, log w)``."""
    from scipy.optimize import minimize

    from fhmm_ppl.models.priors import make_prior

    weight = rng.uniform(0.0, 5.0, (4, 1)) * np.ones((1, 6))
    weight[2] = 0.0  # a state no frame visits
    total = weight * rng.exponential(1.0, (4, 6)) * np.geomspace(1, 100, 6)
    got = np.asarray(make_prior("shared_shape").map_update(shape_stat=jnp.asarray(weight, jnp.float32),
                                                            scale_stat=jnp.asarray(total, jnp.float32)), np.float64)
    assert np.linalg.matrix_rank(got, tol=1e-5 * np.abs(got).max()) == 1

    def negative(x):
        log_v = x[:4, None] + x[None, 4:]
        return np.sum(weight * log_v + total * np.exp(-log_v))

    best = minimize(negative, np.zeros(10), method="BFGS", options={"gtol": 1e-10})
    visited = weight[:, 0] > 0
    want = np.exp(best.x[:4, None] + best.x[None, 4:])
    np.testing.assert_allclose(got[visited], want[visited], rtol=1e-3)
    assert negative(np.log(np.r_[got[:, 0] / got[0, 0], got[0]])) <= best.fun + 1e-6 * abs(best.fun)


@pytest.fixture(scope="module")
def tones_and_noise():
    """A tones HMM trained on clean tones, a mixture with unseen noise, and the references."""
    rng = np.random.default_rng(0)
    train = {"tones": low_tones(rng, 6), "noise": high_noise(rng, 6)}
    supervised = fit_separator(train, RATE, n_states=6, max_iter=8, emission="complex_gaussian", n_models=1)
    semi = fit_separator({"tones": train["tones"]}, RATE, unknown=["noise"], unknown_states=3, adapt_iter=15,
                         n_states=6, max_iter=8, emission="complex_gaussian", n_models=1)
    refs = np.stack([low_tones(rng, 3), high_noise(rng, 3)])
    return supervised, semi, refs


def test_separate_adapts_first_and_returns_every_source(tones_and_noise):
    _, semi, refs = tones_and_noise
    mixture = refs.sum(0)
    assert semi.pending and semi.names == ["tones", "noise"]
    estimates = semi.separate(mixture)
    assert list(estimates) == ["tones", "noise"]
    adapted = semi.adapt(mixture)
    assert not adapted.pending
    np.testing.assert_allclose(adapted.separate(mixture)["noise"], estimates["noise"], atol=1e-6)
    with pytest.raises(ValueError, match="not learnt yet"):
        semi.gains(stft(mixture, semi.options.stft))


def test_known_parameters_unchanged_and_objective_never_decreases(tones_and_noise):
    _, semi, refs = tones_and_noise
    adapted = semi.adapt(refs.sum(0))
    for key in ("init", "trans"):
        original, after = getattr(semi.models["tones"], key), getattr(adapted.models["tones"], key)
        assert after.dtype == original.dtype and np.array_equal(after, original)
    assert np.array_equal(adapted.models["tones"].emission["psd"], semi.models["tones"].emission["psd"])
    objective = adapted.adaptation_objective
    assert len(objective) == 16 and objective[-1] > objective[0]
    assert np.all(np.diff(objective) >= -1e-5 * np.abs(objective[1:]))


def test_each_model_set_of_an_ensemble_adapts(tones_and_noise):
    _, semi, refs = tones_and_noise
    tones = semi.models["tones"]
    ensemble = Separator([{"tones": tones}, {"tones": tones}], RATE, semi.options, adaptation=semi.adaptation)
    adapted = ensemble.adapt(refs.sum(0))
    assert len(adapted.members) == 2 and all(list(m) == ["tones", "noise"] for m in adapted.members)
    assert all(m["tones"] is tones for m in adapted.members)
    assert adapted.members[1]["noise"].emission["psd"].shape == (3, semi.options.features.n_fft // 2 + 1)


def test_objective_never_decreases_under_map_priors(tones_and_noise):
    _, semi, refs = tones_and_noise
    known = {"tones": semi.models["tones"]}
    power = np.abs(stft(refs.sum(0), semi.options.stft)) ** 2
    priors = {"psd": {"name": "inverse_gamma", "params": {"concentration": 2.0, "rate": 1e-3}},
              "transition": {"name": "dirichlet", "params": {"concentration": 2.0, "sticky": 5.0}}}
    result = adapt_models(known, power, Adaptation(("noise",), 4, 20), priors)
    assert not result.decreases
    assert np.all(np.diff(result.objective) >= -1e-5 * np.abs(result.objective[1:]))
    assert result.models["tones"] is known["tones"]


def test_a_shared_shape_unknown_source_keeps_one_shape_and_never_lowers_the_objective(tones_and_noise):
    _, semi, refs = tones_and_noise
    power = np.abs(stft(refs.sum(0), semi.options.stft)) ** 2
    result = adapt_models({"tones": semi.models["tones"]}, power, Adaptation(("noise",), 4, 20),
                          {"psd": {"name": "shared_shape"}})
    assert not result.decreases
    assert np.all(np.diff(result.objective) >= -1e-5 * np.abs(result.objective[1:]))
    psd = result.models["noise"].emission["psd"].astype(np.float64)
    singular = np.linalg.svd(psd, compute_uv=False)
    assert singular[1] < 1e-4 * singular[0]  # every state the same spectrum at its own level
    assert psd.max(axis=1).max() > 2 * psd.max(axis=1).min()  # ... at different levels


def test_unknown_priors_override_the_models_priors_by_role():
    from fhmm_ppl.settings import ModelSettings

    model = ModelSettings(priors={"psd": {"name": "inverse_gamma"}, "transition": {"name": "dirichlet"}},
                          unknown_priors={"psd": {"name": "shared_shape"}, "transition": None})
    assert model.unknown_prior_specs() == {"psd": {"name": "shared_shape", "params": {}}}
    with pytest.raises(ValueError, match="no prior role 'means' for the complex_gaussian emission"):
        fit_separator({"a": np.zeros(RATE, np.float32)}, RATE, unknown="b", emission="complex_gaussian",
                      unknown_priors={"means": {"name": "normal"}})


def speech_noise_sdrs(separators: dict, mixture, refs):
    """``({label: speech and noise SDR (2,)}, the mixture's (2,))`` of each separator on ``mixture``."""
    sdr = {}
    for label, sep in separators.items():
        est = sep.separate(mixture)
        sdr[label] = bss_eval(refs, np.stack([est["speech"], est["noise"]])).sdr
    return sdr, bss_eval(refs, np.stack([mixture, mixture])).sdr


def test_unknown_source_with_a_clean_twin_is_recovered():
    """Speech in white noise (demo data, 4 s): a separator whose noise HMM is trained on the very noise
    of the mixture (its clean twin) is the ceiling; with the same speech HMM and the noise learnt on
    the mixture alone, the speech estimate comes within 3 dB SDR of it and stays a real separation."""
    task = demo_task("speech_noise", "white", test_seconds=4.0)
    mixture, reference = task.mixtures[0], task.references[0]
    refs = np.stack([reference["speech"], reference["noise"]])
    twin = fit_separator({"speech": task.train["speech"], "noise": reference["noise"]}, task.sample_rate, n_states=8,
                         max_iter=10, emission="complex_gaussian", n_models=1)
    semi = Separator({"speech": twin.models["speech"]}, task.sample_rate, twin.options,
                     adaptation=Adaptation(("noise",), 4, 30))
    sdr, floor = speech_noise_sdrs({"twin": twin, "semi": semi}, mixture, refs)
    assert sdr["semi"][0] > sdr["twin"][0] - 3.0, sdr
    assert np.all(sdr["semi"] > floor + 3.0), (sdr, floor)


def test_the_default_log_mel_separator_learns_an_unknown_noise_in_its_own_parameters():
    """Speech in white noise (demo data, 4 s), the default emission: the noise learnt on the mixture
    gets log-mel means, variances, state spectra and dictionaries, and the speech estimate is a real
    separation, within 3 dB of the fully supervised separator's."""
    task = demo_task("speech_noise", "white", test_seconds=4.0)
    mixture, reference = task.mixtures[0], task.references[0]
    refs = np.stack([reference["speech"], reference["noise"]])
    supervised = fit_separator(task.train, task.sample_rate, n_states=8, max_iter=10, n_models=1)
    semi = supervised.with_unknown("noise")
    adapted = semi.adapt(mixture)
    noise = adapted.models["noise"].emission
    n_bins, n_mels = supervised.options.features.n_fft // 2 + 1, supervised.options.features.n_mels
    assert noise["means"].shape == noise["variances"].shape == (4, n_mels) and noise["psd"].shape == (4, n_bins)
    assert noise["dictionaries"].shape == (4, n_bins, supervised.options.dictionary_size)
    assert adapted.models["speech"] is supervised.models["speech"]
    sdr, floor = speech_noise_sdrs({"supervised": supervised, "semi": adapted}, mixture, refs)
    assert sdr["semi"][0] > sdr["supervised"][0] - 3.0, sdr
    assert np.all(sdr["semi"] > floor + 3.0), (sdr, floor)


def test_adapted_and_unadapted_separators_save_and_load(tones_and_noise, tmp_path):
    _, semi, refs = tones_and_noise
    mixture = refs.sum(0)
    loaded = load(semi.save(tmp_path / "unadapted"))
    assert loaded.pending and loaded.adaptation == semi.adaptation and loaded.names == semi.names
    adapted = semi.adapt(mixture)
    again = load(adapted.save(tmp_path / "adapted"))
    assert not again.pending
    for name in adapted.names:
        np.testing.assert_array_equal(again.models[name].emission["psd"], adapted.models[name].emission["psd"])
    np.testing.assert_allclose(again.separate(mixture)["noise"], adapted.separate(mixture)["noise"], atol=1e-6)


def test_semi_supervised_settings_are_checked(tones_and_noise):
    supervised, _, refs = tones_and_noise
    tones = refs[0]
    with pytest.raises(ValueError, match="both given training audio and named unknown"):
        fit_separator({"tones": tones, "noise": tones}, RATE, unknown="noise", emission="complex_gaussian")
    with pytest.raises(ValueError, match="semi-supervised separator"):
        supervised.adapt(refs.sum(0))
    with pytest.raises(ValueError, match="distinct sources"):
        Separator({"tones": supervised.models["tones"]}, RATE, supervised.options,
                  adaptation=Adaptation(("noise", "noise"), 2))


def test_semi_supervised_nmf_keeps_the_known_dictionary_and_never_raises_the_divergence(tones_and_noise):
    _, _, refs = tones_and_noise
    nmf = fit_semi_supervised_nmf({"tones": refs[0]}, "noise", n_components=6, unknown_components=3)
    known = nmf.dictionaries["tones"].copy()
    magnitude = np.abs(stft(refs.sum(0), nmf.config)).astype(np.float64) + 1e-10
    activations, bases, history = nmf.factorise(magnitude)
    assert np.array_equal(bases["tones"], known) and np.array_equal(nmf.dictionaries["tones"], known)
    assert bases["noise"].shape == (3, magnitude.shape[1])
    assert np.all(np.diff(history) <= 1e-9 * history[:-1])
    stacked = np.concatenate(list(bases.values()))
    assert kl_divergence(magnitude, activations @ stacked) == pytest.approx(history[-1])
    estimates = nmf.separate(refs.sum(0))
    assert list(estimates) == ["tones", "noise"]


def test_a_supervised_separator_forgets_a_source_and_the_cli_learns_it_on_the_recording(tones_and_noise, tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from fhmm_ppl.cli import app

    supervised, semi, refs = tones_and_noise
    mixture = refs.sum(0)
    forgot = supervised.with_unknown("noise")
    assert forgot.pending and forgot.names == ["tones", "noise"] and forgot.options.model.unknown == ["noise"]
    for member, original in zip(forgot.members, supervised.members):  # the known source is the same model
        assert member["tones"] is original["tones"] and "noise" not in member
    with pytest.raises(ValueError, match="no source \\['wind'\\]"):
        supervised.with_unknown("wind")
    folder = supervised.save(tmp_path / "model")
    sf.write(tmp_path / "mix.wav", mixture, RATE, subtype="FLOAT")
    result = CliRunner().invoke(app, ["separate", str(folder), str(tmp_path / "mix.wav"), "--unknown", "noise",
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    wave, _ = sf.read(tmp_path / "out" / "mix_noise.wav", dtype="float32")
    np.testing.assert_allclose(wave, forgot.separate(mixture)["noise"], atol=1e-5)
