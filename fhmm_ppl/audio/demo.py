"""The built-in demo data: no download, deterministic.

It mirrors the categories of the Massive Distributed Microphone Array dataset:
speech from several talkers (shipped: four synthetic espeak-ng talkers, 24 s
each, with varied prosody and a simulated room; see
``fhmm_ppl/data/demo/PROVENANCE.md``), exponential sine sweeps
("chirps"), several kinds of noise, and mixed speech, all generated here from
seeds. ``fhmm_ppl.audio.tasks`` builds separation tasks from them.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import soundfile as sf

RATE = 16000
TALKERS = ("talker1", "talker2", "talker3", "talker4")
NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")
TRAIN_SECONDS = 16.0


def demo_speech(talker: str) -> np.ndarray:
    """One shipped talker, ``(384000,)`` float32 at 16 kHz (24 s)."""
    if talker not in TALKERS:
        raise ValueError(f"unknown demo talker {talker!r}; choose one of {', '.join(TALKERS)}")
    path = resources.files("fhmm_ppl") / "data" / "demo" / "speech" / f"{talker}.flac"
    with resources.as_file(path) as real:
        signal, rate = sf.read(str(real), dtype="float32")
    assert rate == RATE
    return signal


def exponential_sweep(seconds: float, f_start: float = 50.0, f_end: float = 7000.0, rate: int = RATE) -> np.ndarray:
    """Exponential (Farina) sine sweep ``(n,)``: instantaneous frequency rises from f_start to f_end."""
    t = np.arange(int(seconds * rate)) / rate
    k = np.log(f_end / f_start)
    phase = 2 * np.pi * f_start * seconds / k * (np.exp(t * k / seconds) - 1)
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)  # 20 ms fades, no clicks
    return (0.5 * np.sin(phase) * fade).astype(np.float32)


def chirps(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """A train of sweeps of random length (1-3 s) and range, with short gaps, ``(n,)``."""
    rng = np.random.default_rng(seed)
    out, n = [], int(seconds * rate)
    while sum(map(len, out)) < n:
        sweep = exponential_sweep(rng.uniform(1, 3), rng.uniform(40, 200), rng.uniform(3000, 7500), rate)
        out += [sweep * rng.uniform(0.4, 1.0), np.zeros(int(rng.uniform(0.05, 0.4) * rate), np.float32)]
    return np.concatenate(out)[:n]


def _shaped_noise(rng: np.random.Generator, n: int, exponent: float, rate: int) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spec *= np.where(freqs > 20, np.maximum(freqs, 20), 20) ** (-exponent / 2)  # power ~ 1/f^exponent
    return np.fft.irfft(spec, n)


def noise(kind: str, seconds: float, seed: int, rate: int = RATE, exclude_talker: str | None = None) -> np.ndarray:
    """Deterministic noise ``(n,)`` of one kind, normalised to -23 dBFS RMS.

    Kinds: ``white``, ``pink`` (1/f), ``brown`` (1/f^2), ``hum`` (mains hum with
    harmonics over fan-like low-passed noise), ``babble`` (the other demo
    talkers, shifted and summed; ``exclude_talker`` leaves the target out).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    if kind == "white":
        sig = rng.normal(size=n)
    elif kind == "pink":
        sig = _shaped_noise(rng, n, 1.0, rate)
    elif kind == "brown":
        sig = _shaped_noise(rng, n, 2.0, rate)
    elif kind == "hum":
        t = np.arange(n) / rate
        sig = sum(np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 8))
        sig = sig + 0.5 * _shaped_noise(rng, n, 1.5, rate) / np.std(_shaped_noise(rng, 1024, 1.5, rate))
    elif kind == "babble":
        voices = [demo_speech(t) for t in TALKERS if t != exclude_talker]
        sig = np.zeros(n)
        for voice in voices:
            start = rng.integers(0, len(voice))
            sig += np.resize(np.roll(voice, -start), n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    sig = np.asarray(sig, np.float64)
    return (sig * 10 ** (-23 / 20) / np.sqrt(np.mean(sig**2))).astype(np.float32)
