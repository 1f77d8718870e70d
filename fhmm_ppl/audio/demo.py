"""The built-in demo data: no download, deterministic.

It mirrors the categories of the Massive Distributed Microphone Array dataset:
speech from several talkers (shipped: four synthetic espeak-ng talkers, 24 s
each, see ``fhmm_ppl/data/demo/PROVENANCE.md``), exponential sine sweeps
("chirps"), several kinds of noise, and mixed speech, all generated here from
seeds. ``demo_task`` builds separation tasks: training audio per source and
test mixtures with their references, train and test never sharing a sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np

RATE = 16000
TALKERS = ("talker1", "talker2", "talker3", "talker4")
NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")
TASKS = ("speech_noise", "speech_chirp", "two_talkers")
TRAIN_SECONDS = 16.0


def demo_speech(talker: str) -> np.ndarray:
    """One shipped talker, ``(384000,)`` float32 at 16 kHz (24 s)."""
    import soundfile as sf

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


def mix_at_snr(target: np.ndarray, interferer: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``interferer`` so that ``10 log10(P_target / P_interferer) = snr_db``; returns (target, scaled)."""
    gain = np.sqrt(np.mean(target**2) / np.mean(interferer**2) / 10 ** (snr_db / 10))
    return target, (interferer * gain).astype(np.float32)


@dataclass
class SeparationTask:
    """Training audio per source and test mixtures with references.

    Attributes:
        name: task name; sample_rate: Hz.
        train: ``{source: (n,)}`` solo training audio.
        mixtures: list of ``(n,)`` test mixtures.
        references: list of ``{source: (n,)}``, one per mixture, summing to it.
    """

    name: str
    sample_rate: int
    train: dict
    mixtures: list = field(default_factory=list)
    references: list = field(default_factory=list)


def demo_task(name: str = "speech_noise", noise_kind: str = "pink", snr_db: float = 0.0, seed: int = 0,
              test_seconds: float = 8.0) -> SeparationTask:
    """A separation task on the demo data.

    ``speech_noise``: talker1 against ``noise_kind``; ``speech_chirp``: talker1
    against sweeps; ``two_talkers``: talker1 against talker2. Speech trains on
    its first 16 s and is tested on the rest; generated interferers use
    different seeds for training and test.
    """
    if name not in TASKS:
        raise ValueError(f"unknown demo task {name!r}; choose one of {', '.join(TASKS)}")
    split = int(TRAIN_SECONDS * RATE)
    n_test = int(test_seconds * RATE)
    speech = demo_speech("talker1")
    train_speech, test_speech = speech[:split], speech[split : split + n_test]
    if name == "speech_noise":
        other = "noise"
        train_other = noise(noise_kind, TRAIN_SECONDS, seed, exclude_talker="talker1")
        test_other = noise(noise_kind, len(test_speech) / RATE, seed + 1000, exclude_talker="talker1")
    elif name == "speech_chirp":
        other = "chirp"
        train_other, test_other = chirps(TRAIN_SECONDS, seed), chirps(len(test_speech) / RATE, seed + 1000)
    else:
        other = "talker2"
        voice = demo_speech("talker2")
        train_other, test_other = voice[:split], voice[split : split + len(test_speech)]
    target, interferer = mix_at_snr(test_speech, test_other[: len(test_speech)], snr_db)
    task = SeparationTask(name, RATE, {"speech": train_speech, other: train_other})
    task.mixtures.append((target + interferer).astype(np.float32))
    task.references.append({"speech": target, other: interferer})
    return task
