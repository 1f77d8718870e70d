"""Frame counts padded to bucket sizes: the same separations as unpadded, and no new compilation
for a mixture of a new length inside a bucket that has been compiled."""

import jax
import numpy as np
import pytest
from test_separation import RATE, high_noise, low_tones

from fhmm_ppl import runtime
from fhmm_ppl.audio.features import stft
from fhmm_ppl.runtime import FRAME_BUCKET_STEPS, MIN_FRAME_BUCKET, frame_bucket
from fhmm_ppl.separation import fit_separator

HOP = 256  # the default hop: a mixture of n_frames frames has (n_frames - 1) * HOP samples


def mixture(rng, n_frames: int) -> np.ndarray:
    n = (n_frames - 1) * HOP
    return (low_tones(rng, n / RATE + 1)[:n] + high_noise(rng, n / RATE + 1)[:n]).astype(np.float32)


def unbucketed(monkeypatch):
    """Turn the padding off (every frame count is its own bucket): the separator's frames, refinement's
    and the tracked noise level's all pad through ``runtime.padded``."""
    monkeypatch.setattr(runtime, "frame_bucket", lambda n_frames: n_frames)


def test_buckets_bound_the_padding_and_are_few():
    sizes = sorted({frame_bucket(n) for n in range(1, 100_001)})
    assert sizes[:9] == [64, 80, 96, 112, 128, 160, 192, 224, 256]
    assert len(sizes) <= 45 and all(s % 16 == 0 for s in sizes)
    assert all(b / a <= 1.25 for a, b in zip(sizes, sizes[1:]))
    for n in range(1, 5000):
        size = frame_bucket(n)
        assert size >= max(n, MIN_FRAME_BUCKET) and size in sizes
        assert n < MIN_FRAME_BUCKET or size == min(s for s in sizes if s >= n)
    assert FRAME_BUCKET_STEPS == (4, 5, 6, 7)


# (emission, inference, extra options): every posterior form (expectation, joint, marginals) and mean field
CASES = [
    ("complex_gaussian", "exact", {}),
    ("complex_gaussian", "mean_field", {}),
    ("logmax", "exact", {}),
    ("log_mel", "exact", {}),  # state dictionaries (the default)
    ("log_mel", "exact", {"state_components": 0}),  # blended dominance and Wiener masks
]


@pytest.fixture(scope="module")
def separators():
    rng = np.random.default_rng(3)
    train = {"tones": low_tones(rng, 4), "noise": high_noise(rng, 4)}
    return {(emission, inference, tuple(extra.items())): fit_separator(
        train, RATE, n_states=5, emission=emission, inference=inference, max_iter=6, n_models=1, n_mels=24, **extra)
        for emission, inference, extra in CASES}


@pytest.mark.parametrize("case", CASES, ids=[f"{e}-{i}{'-' + '-'.join(x) if x else ''}" for e, i, x in CASES])
def test_padding_leaves_estimates_masks_and_state_posteriors_unchanged(separators, monkeypatch, case):
    emission, inference, extra = case
    sep = separators[(emission, inference, tuple(extra.items()))]
    mix = mixture(np.random.default_rng(4), 67)  # padded to 80 frames: 13 frames of padding
    spec = stft(mix, sep.options.stft)
    assert spec.shape[0] == 67 and frame_bucket(67) == 80
    padded_estimates, padded_gains = sep.separate(mix, return_gains=True)
    padded_states = sep.state_posteriors(spec)
    unbucketed(monkeypatch)
    estimates, gains = sep.separate(mix, return_gains=True)
    states = sep.state_posteriors(spec)
    assert padded_gains.shape == gains.shape == (2,) + spec.shape
    np.testing.assert_allclose(padded_gains, gains, atol=1e-5)
    for name in sep.names:
        np.testing.assert_allclose(padded_estimates[name], estimates[name], atol=1e-5)
        np.testing.assert_allclose(padded_states[name], states[name], atol=1e-5)
        assert padded_states[name].shape == (67, 5)


def test_padding_leaves_state_oracle_masks_unchanged(separators, monkeypatch):
    sep = separators[("logmax", "exact", ())]
    rng = np.random.default_rng(5)
    n = 70 * HOP
    refs = [low_tones(rng, 3)[:n], high_noise(rng, 3)[:n]]
    spec = stft(refs[0] + refs[1], sep.options.stft)
    sources = [stft(r, sep.options.stft) for r in refs]
    padded = sep.state_oracle_gains(spec, sources)
    unbucketed(monkeypatch)
    np.testing.assert_allclose(padded, sep.state_oracle_gains(spec, sources), atol=1e-5)


class CompileCounter:
    """Counts JAX's tracing and compilation events (an in-process cache miss of any jitted function
    or eager operation traces, lowers and compiles, or reads the persistent cache)."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.events = []

    def __call__(self, event, duration, **kwargs):
        if event in self.EVENTS:
            self.events.append((event, kwargs.get("fun_name")))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


@pytest.mark.parametrize("emission", ["log_mel", "complex_gaussian"])
def test_a_new_length_inside_a_compiled_bucket_compiles_nothing(separators, emission):
    sep = separators[(emission, "exact", ())]
    rng = np.random.default_rng(7)
    sep.separate(mixture(rng, 81))  # bucket 96 compiled (81..96 frames)
    sep.state_posteriors(stft(mixture(rng, 81), sep.options.stft))
    with CompileCounter() as same_bucket:
        sep.separate(mixture(rng, 94))
        sep.state_posteriors(stft(mixture(rng, 88), sep.options.stft))
    assert same_bucket.events == []
    with CompileCounter() as next_bucket:  # the counter sees compilation where there is some
        sep.separate(mixture(rng, 100))  # bucket 112
    assert next_bucket.events
