"""Classification: known answers, no leakage, metrics equal scikit-learn's, dataset labels from file names."""

import numpy as np
import pytest
from sklearn import metrics as skm

from fhmm_ppl.classification import (
    ClassifierOptions,
    demo_recordings,
    evaluate,
    fit_classifier,
    make_splits,
    mma_recordings,
)
from fhmm_ppl.metrics import classification_report


def _sequences(rng, means, per_class, dim=3, n_frames=60):
    """Recordings whose frames alternate between two Gaussian clusters around each class's mean."""
    seqs, labels = [], []
    for label, mean in means.items():
        for _ in range(per_class):
            centre = np.where(np.arange(n_frames)[:, None] % 10 < 5, mean, mean + 1.0)
            seqs.append((centre + rng.normal(size=(n_frames, dim))).astype(np.float32))
            labels.append(label)
    return seqs, labels


def test_report_equals_scikit_learn():
    rng = np.random.default_rng(0)
    labels = ["chirp", "mix", "noise", "speech"]
    y_true = rng.choice(labels, size=57, p=[0.2, 0.1, 0.1, 0.6])
    y_pred = rng.choice(labels[:3] + ["speech"], size=57, p=[0.3, 0.0, 0.2, 0.5])  # "mix" never predicted
    report = classification_report(y_true, y_pred, labels)
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    for name, fn in [("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)]:
        assert report[f"{name}_macro"] == pytest.approx(fn(y_true, y_pred, average="macro", zero_division=0))
        per = fn(y_true, y_pred, average=None, labels=labels, zero_division=0)
        assert [report["per_class"][c][name] for c in labels] == pytest.approx(per)
    assert report["per_class"]["mix"]["precision"] == 0.0
    assert [report["per_class"][c]["support"] for c in labels] == [int(np.sum(y_true == c)) for c in labels]
    np.testing.assert_array_equal(report["confusion"], skm.confusion_matrix(y_true, y_pred, labels=labels))
    assert report["confusion"][:, 1].sum() == 0 and report["confusion"].sum() == 57
    with pytest.raises(ValueError, match="not among the classes"):
        classification_report(["a"], ["b"], ["a"])


def test_plainly_different_classes_reach_accuracy_one():
    rng = np.random.default_rng(1)
    seqs, labels = _sequences(rng, {"low": 0.0, "mid": 4.0, "high": 8.0}, per_class=8)
    splits = make_splits(labels, None, "cv", n_splits=4)
    result = evaluate(seqs, labels, splits, ClassifierOptions.from_flat(n_states=2, scaler="standard", max_iter=10))
    assert sorted(result.tested.tolist()) == list(range(len(seqs)))  # every recording tested exactly once
    assert classification_report(result.y_true, result.y_pred, result.labels)["accuracy"] == 1.0


def test_identical_distributions_reach_chance():
    rng = np.random.default_rng(2)
    seqs, labels = _sequences(rng, {"a": 0.0, "b": 0.0}, per_class=40, n_frames=30)
    splits = make_splits(labels, None, "cv", n_splits=4)
    result = evaluate(seqs, labels, splits, ClassifierOptions.from_flat(n_states=2, scaler="standard", max_iter=10))
    report = classification_report(result.y_true, result.y_pred, result.labels)
    assert 0.3 <= report["balanced_accuracy"] <= 0.7  # 80 test recordings: chance is 0.5 +- 0.056


def test_scaler_is_fitted_on_training_recordings_only():
    rng = np.random.default_rng(3)
    seqs, labels = _sequences(rng, {"a": 0.0, "b": 5.0}, per_class=8)
    seqs[3] = seqs[3] + 100.0  # one far-out recording: any fold that tests it must not have scaled with it
    splits = make_splits(labels, None, "cv", n_splits=4)
    result = evaluate(seqs, labels, splits, ClassifierOptions.from_flat(n_states=2, scaler="minmax", max_iter=5))
    for (train, test), model in zip(result.splits, result.classifiers):
        frames = np.concatenate([seqs[i] for i in train])
        np.testing.assert_allclose(model.normalizer._scaler.data_min_, frames.min(0))
        np.testing.assert_allclose(model.normalizer._scaler.data_max_, frames.max(0))
        assert set(train.tolist()).isdisjoint(test.tolist())
    outlier_fold = [k for k, (_, test) in enumerate(result.splits) if 3 in test][0]
    assert result.classifiers[outlier_fold].normalizer._scaler.data_max_.max() < 50


def test_grouped_splits_never_share_a_group_and_keep_every_class_in_training():
    data = demo_recordings(0, clip_seconds=0.5)
    assert data.counts() == {"chirp": 12, "mix": 8, "noise": 8, "speech": 32}
    for method in ("cv", "holdout"):
        splits = make_splits(data.labels, data.groups, method, n_splits=4, test_fraction=0.25)
        assert len(splits) == (4 if method == "cv" else 1)
        groups = np.asarray(data.groups)
        for train, test in splits:
            assert set(groups[train]).isdisjoint(groups[test])
            assert set(np.asarray(data.labels)[train]) == set(data.classes)
    with pytest.raises(ValueError, match="4 groups cannot make 5 grouped folds"):
        make_splits(data.labels, data.groups, "cv", n_splits=5)
    with pytest.raises(ValueError, match="smallest class has 8 recordings, fewer than n_splits=10"):
        make_splits(data.labels, None, "cv", n_splits=10)
    # a class with fewer recordings than folds is untested in some folds: no scikit-learn warning about it
    import warnings

    labels = ["a"] * 6 + ["b"] * 2
    groups = ["g0", "g1", "g2", "g3", "g4", "g5", "g0", "g1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = make_splits(labels, groups, "cv", n_splits=3)
    assert len(splits) == 3 and all("b" in np.asarray(labels)[train] for train, _ in splits)


def test_demo_recordings_are_deterministic_and_distinct_per_session():
    one, two = demo_recordings(0, clip_seconds=0.5), demo_recordings(0, clip_seconds=0.5)
    assert len(one.signals) == 60 and one.names == two.names
    for a, b in zip(one.signals, two.signals):
        np.testing.assert_array_equal(a, b)
    assert all(s.shape == (8000,) and np.all(np.isfinite(s)) and np.std(s) > 0 for s in one.signals)
    assert sorted(set(one.groups)) == ["session1", "session2", "session3", "session4"]


def test_scores_are_each_models_exact_log_likelihood_as_hmmlearn():
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(4)
    seqs, labels = _sequences(rng, {"a": 0.0, "b": 3.0}, per_class=4)
    model = fit_classifier(seqs, labels, ClassifierOptions.from_flat(n_states=3, scaler="none", max_iter=5))
    scores = model.scores(seqs[:3])
    for column, label in enumerate(model.labels):
        params = model.models[label]
        ref = hmmlearn.GaussianHMM(3, covariance_type="diag")
        ref.startprob_, ref.transmat_ = np.asarray(params.init[0], float), np.asarray(params.trans[0], float)
        ref.means_, ref.covars_ = np.asarray(params.emission.means[0], float), np.asarray(params.emission.covars[0], float)
        expected = [ref.score(s.astype(float)) for s in seqs[:3]]
        np.testing.assert_allclose(scores[:, column], expected, rtol=1e-4)


def test_class_priors_break_ties_towards_the_frequent_class():
    rng = np.random.default_rng(5)
    seqs, labels = _sequences(rng, {"rare": 0.0}, per_class=2)
    more, more_labels = _sequences(rng, {"common": 0.0}, per_class=6)
    model = fit_classifier(seqs + more, labels + more_labels, ClassifierOptions.from_flat(n_states=1, max_iter=3, class_priors=True))
    tied = np.zeros((2, 2))
    assert model.predict(None, tied).tolist() == ["common", "common"]
    assert model.log_prior == pytest.approx(np.log([0.75, 0.25]))
    with pytest.warns(RuntimeWarning, match=r"recordings \[1\] have no finite score under any class model"):
        assert model.predict(None, np.array([[0.0, -1.0], [-np.inf, np.nan]])).tolist() == ["common", model.labels[0]]


def test_dataset_recordings_are_labelled_from_their_file_names(mma_tree):
    data = mma_recordings(str(mma_tree), channel=3, sample_rate=16000)
    assert len(data.signals) == 363
    assert data.counts() == {"chirp": 161, "mix": 16, "noise": 16, "speech": 170}
    by_name = dict(zip(data.names, zip(data.labels, data.groups)))
    assert by_name["tabletop07_speech03"] == ("speech", "tabletop07")
    assert by_name["wearable02_chirp10"] == ("chirp", "wearable02")
    assert by_name["tabletop12_mix"] == ("mix", "tabletop12")
    assert by_name["wearable04_noise"] == ("noise", "wearable04")
    assert by_name["chirp"] == ("chirp", "sources") and by_name["speech10"] == ("speech", "sources")
    assert len(set(data.groups)) == 17 and all(s.shape == (800,) for s in data.signals)
    with pytest.raises(ValueError, match="no such folder; download"):
        mma_recordings(str(mma_tree / "absent"))


def test_svi_trained_class_models_separate_plain_classes():
    rng = np.random.default_rng(6)
    seqs, labels = _sequences(rng, {"low": 0.0, "high": 6.0}, per_class=3)
    model = fit_classifier(seqs, labels, ClassifierOptions.from_flat(n_states=2, trainer="svi", svi_steps=60, scaler="standard"))
    assert model.predict(seqs).tolist() == labels
    assert all(h[-1] > h[0] for h in model.history.values())  # minus the loss rose: the log posterior improved
