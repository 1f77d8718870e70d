"""train.fit: the trainer the settings name, best of n_init starts, the objective history."""

import warnings

import numpy as np
import pytest
from test_training import hmm_data

from fhmm_ppl.models import FHMMSpec, make_family
from fhmm_ppl.models.families import kmeans_labels
from fhmm_ppl.settings import TrainingSettings
from fhmm_ppl.train import fit, fit_em, fit_svi, initial_params


@pytest.fixture(scope="module")
def problem():
    seqs = hmm_data(np.random.default_rng(0), n_seq=2, n_frames=60, dim=2)
    return seqs, FHMMSpec((4,), make_family("gaussian"))  # one state more than the data: local optima differ


def test_best_of_n_init_keeps_the_highest_final_objective(problem):
    seqs, spec = problem
    finals = {}
    for seed in range(1, 5):
        own = fit_em(seqs, spec, init=initial_params(spec, seqs, seed=seed), max_iter=8, seed=seed)
        finals[seed] = own.objective
    assert len({round(float(v[-1]), 3) for v in finals.values()}) > 1  # the starts do reach different optima
    best = max(finals, key=lambda s: finals[s][-1])
    result = fit(seqs, spec, TrainingSettings(method="em", max_iter=8, n_init=4), seed=1)
    assert result.seed == best
    np.testing.assert_allclose(result.history, finals[best], rtol=1e-6)
    assert 1 <= len(result.history) <= 8  # one objective per EM iteration (it may stop early)


def test_one_start_is_plain_em_from_k_means(problem):
    seqs, spec = problem
    result = fit(seqs, spec, TrainingSettings(max_iter=5, n_init=1), seed=3)
    own = fit_em(seqs, spec, init=initial_params(spec, seqs, seed=3), max_iter=5, seed=3)
    assert result.seed == 3
    np.testing.assert_allclose(result.history, own.objective, rtol=1e-6)
    np.testing.assert_allclose(result.params.emission.means[0], own.params.emission.means[0], rtol=1e-5)


def test_svi_runs_svi_steps_and_reports_minus_the_loss(problem):
    seqs, spec = problem
    result = fit(seqs, spec, TrainingSettings(method="svi", max_iter=3, svi_steps=40), seed=0)
    own = fit_svi(seqs, spec, init=initial_params(spec, seqs, seed=0), n_steps=40, seed=0)
    assert result.history.shape == (40,)  # svi_steps, not max_iter
    np.testing.assert_allclose(result.history, -own.losses, rtol=1e-5)
    assert result.history[-1] > result.history[0]


def test_kmeans_start_on_repeated_frames_is_quiet_and_complete():
    """A pure periodic tone repeats a handful of frames: more states than distinct frames start some
    states alike, without scikit-learn's warning, and every frame's center is the frame itself."""
    frames = np.tile(np.random.default_rng(0).normal(size=(3, 5)), (20, 1))  # 3 distinct frames, 60 rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        centers, labels = kmeans_labels(frames, 6, seed=0)
    assert centers.shape == (6, 5) and labels.shape == (60,)
    np.testing.assert_allclose(centers[labels], frames, atol=1e-9)
