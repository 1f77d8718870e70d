"""States per source from its training audio when ``model.n_states`` is not given."""

import numpy as np
import pytest
from pydantic import ValidationError

from fhmm_ppl.classification import ClassifierOptions
from fhmm_ppl.experiment.config import ExperimentConfig
from fhmm_ppl.separation import fit_separator, load
from fhmm_ppl.separation.training import MAX_STATES, MIN_STATES, STATE_STEP, state_counts, states_for
from fhmm_ppl.settings import ModelSettings

RATE = 8000


@pytest.mark.parametrize("seconds, states", [(0.5, 8), (3.0, 8), (6.0, 16), (8.0, 16), (10.0, 24), (13.0, 32),
                                             (16.0, 32), (3600.0, 32)])
def test_states_grow_with_training_audio_within_bounds(seconds, states):
    assert states_for(seconds) == states


def test_state_counts_are_steps_and_never_fall_as_audio_grows():
    counts = [states_for(s) for s in np.linspace(0.0, 30.0, 301)]
    assert all(b >= a for a, b in zip(counts, counts[1:]))
    assert set(counts) == set(range(MIN_STATES, MAX_STATES + 1, STATE_STEP))
    sources = {"long": np.zeros(13 * RATE, np.float32), "short": np.zeros(6 * RATE, np.float32)}
    assert state_counts(sources, RATE) == {"long": 32, "short": 16}
    assert state_counts(sources, RATE, n_states=4) == {"long": 4, "short": 4}


def test_each_source_gets_states_for_its_own_audio_and_an_explicit_count_wins(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(6 * RATE) / RATE
    tones = (0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.1 * np.sin(t)))).astype(np.float32)
    hiss = (0.1 * rng.standard_normal(3 * RATE)).astype(np.float32)
    sources = {"tones": tones, "hiss": hiss}
    options = dict(n_models=1, max_iter=3, n_fft=256, hop_length=64, n_mels=20)
    auto = fit_separator(sources, RATE, **options)
    assert ModelSettings().n_states is None and auto.options.model.n_states is None
    assert {name: model.init.shape[0] for name, model in auto.members[0].items()} == {"tones": 16, "hiss": 8}
    mixture = tones[: 2 * RATE] + np.resize(hiss, 2 * RATE)
    estimates = auto.separate(mixture)
    assert all(np.all(np.isfinite(e)) and e.shape == mixture.shape for e in estimates.values())
    auto.save(tmp_path / "auto")
    loaded = load(tmp_path / "auto")
    assert [m.init.shape[0] for m in loaded.members[0].values()] == [16, 8]
    np.testing.assert_allclose(loaded.separate(mixture)["tones"], estimates["tones"], atol=1e-5)
    fixed = fit_separator(sources, RATE, n_states=4, **options)
    assert [m.init.shape[0] for m in fixed.members[0].values()] == [4, 4]


def test_classification_needs_a_state_count():
    with pytest.raises(ValidationError, match="classification needs a number of states"):
        ClassifierOptions(model={"emission": "gaussian", "n_states": None})
    with pytest.raises(ValidationError, match="classification needs a number of states"):
        ExperimentConfig.model_validate({"name": "c", "task": "classification", "data": {"source": "demo"},
                                         "model": {"n_states": None}})
    assert ClassifierOptions().model.n_states == 4
