"""Generate the built-in demo speech once, with espeak-ng, as small FLAC files.

Four synthetic talkers (two male, two female espeak-ng voice variants) read
sentences written for this project. Synthetic speech flatters a separator
(steady loudness, regular pitch, no room: issue 15), so the reading varies as a
person's does and is heard in a room:

- between utterances: each sentence gets its own pitch (base +-12), speed
  (base +-15%) and level (+-6 dB);
- within an utterance: the sentence is read as two to four phrases, each with
  its own SSML prosody (pitch -25%..+30%, rate 85-115%, volume -6..+4 dB);
- a room: each talker speaks in its own simulated shoebox room
  (pyroomacoustics image-source method, RT60 0.3-0.6 s, 1-3 m from the
  microphone), so the speech carries reverberation.

The output is resampled to 16 kHz, normalised to -23 dBFS RMS and written as
16-bit FLAC into ``fhmm_ppl/data/demo/speech/``; ``PROVENANCE.md`` beside it
records how. Deterministic for a given espeak-ng (seeded).

Needs the Debian package ``espeak-ng`` (``apt-get install espeak-ng``) and
``pip install pyroomacoustics``. Not run by tests or at run time: the FLAC
files are shipped.

Run: ``python scripts/make_demo_speech.py``
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pyroomacoustics as pra
import soundfile as sf
from scipy.signal import fftconvolve

from fhmm_ppl.audio.io import resample

OUT = Path(__file__).resolve().parents[1] / "fhmm_ppl" / "data" / "demo" / "speech"
RATE = 16000
SECONDS = 24.0
SEED = 2026
TALKERS = {
    "talker1": ("en-us+m3", 150, 45),
    "talker2": ("en-gb+f2", 160, 60),
    "talker3": ("en-us+f4", 145, 55),
    "talker4": ("en-gb-scotland+m1", 155, 40),
}
SENTENCES = [
    "The small boat drifted slowly past the old stone bridge.",
    "Every morning she counted the birds that sat on the wire.",
    "A cold wind came down from the hills before the rain.",
    "He painted the fence green because the neighbours asked him to.",
    "The library closes early on the last Friday of each month.",
    "Seven bright lanterns hung above the market square at night.",
    "Our train was late, so we shared a pot of tea in the station.",
    "The engineer measured the echo in the empty concert hall.",
    "Please put the heavy books on the lowest shelf.",
    "Two foxes crossed the field just after the sun went down.",
    "The recipe calls for flour, butter, and a pinch of salt.",
    "Quiet rooms are rare in a house full of children.",
    "The map was wrong about the river, but right about the road.",
    "She tuned the old radio until a clear voice came through.",
    "We planted tomatoes along the south wall of the garden.",
    "The clock in the tower struck nine and then stopped.",
    "A parcel arrived with no name and a foreign stamp.",
    "The swimmers waited for the whistle at the edge of the pool.",
    "His bicycle had a loud bell and a basket full of apples.",
    "Snow covered the roofs long before the first lights came on.",
    "The lecture explained how microphones hear a crowded room.",
    "Fresh bread smells best when the kitchen window is open.",
    "The captain read the weather report twice before leaving port.",
    "Most of the letters were written in pencil on thin paper.",
]


def prosody(sentence: str, rng: np.random.Generator) -> str:
    """The sentence as SSML: two to four phrases, each with its own pitch, rate and volume."""
    words = sentence.split()
    cuts = sorted(rng.choice(np.arange(1, len(words)), size=rng.integers(1, 4), replace=False))
    phrases = [" ".join(words[a:b]) for a, b in zip([0, *cuts], [*cuts, len(words)])]
    return "<speak>" + " ".join(
        f'<prosody pitch="{rng.uniform(-25, 30):+.0f}%" rate="{rng.uniform(85, 115):.0f}%" '
        f'volume="{rng.uniform(-6, 4):+.1f}dB">{escape(p)}</prosody>' for p in phrases) + "</speak>"


def speak(ssml: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-m", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, ssml],
                       check=True)
        audio, rate = sf.read(tmp.name, dtype="float32")
    return audio, rate


def room_response(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A shoebox room's impulse response ``(n,)`` at 16 kHz and a line describing the room."""
    dims = np.array([rng.uniform(4, 8), rng.uniform(3, 6), rng.uniform(2.5, 3.5)])
    rt60 = rng.uniform(0.3, 0.6)
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=RATE, materials=pra.Material(absorption), max_order=max_order)
    mic = dims * np.array([0.5, 0.5, 0.45])
    direction = rng.normal(size=2)
    distance = rng.uniform(1.0, 3.0)
    source = mic.copy()
    source[:2] = np.clip(mic[:2] + distance * direction / np.linalg.norm(direction), 0.3, dims[:2] - 0.3)
    source[2] = 1.5
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    where = (f"room {dims[0]:.1f} x {dims[1]:.1f} x {dims[2]:.1f} m, RT60 {rt60:.2f} s, "
             f"{np.linalg.norm(source - mic):.1f} m away")
    return rir / np.max(np.abs(rir)), where


def talker(index: int, voice: str, speed: int, pitch: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One talker's 24 s: varied sentences, 0.15-0.5 s pauses, then the room."""
    pieces, total = [], 0
    order = np.roll(np.arange(len(SENTENCES)), -6 * index)  # each talker starts elsewhere in the text
    for i in order:
        audio, rate = speak(prosody(SENTENCES[i], rng), voice, int(speed * rng.uniform(0.85, 1.15)),
                            int(np.clip(pitch + rng.integers(-12, 13), 0, 99)))
        audio = resample(audio, rate, RATE) * 10 ** (rng.uniform(-6, 6) / 20)
        pieces += [audio, np.zeros(int(rng.uniform(0.15, 0.5) * RATE), np.float32)]
        total += len(pieces[-2]) + len(pieces[-1])
        if total >= SECONDS * RATE:
            break
    dry = np.concatenate(pieces)
    rir, where = room_response(rng)
    return fftconvolve(dry, rir)[: int(SECONDS * RATE)], where


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("Data at")[0].strip()
    rng = np.random.default_rng(SEED)
    rooms = {}
    for index, (name, (voice, speed, pitch)) in enumerate(TALKERS.items()):
        signal, rooms[name] = talker(index, voice, speed, pitch, rng)
        signal *= 10 ** (-23 / 20) / np.sqrt(np.mean(signal**2))
        sf.write(OUT / f"{name}.flac", np.clip(signal, -1, 1), RATE, subtype="PCM_16")
        print(f"{name}: {voice}, {len(signal) / RATE:.1f} s, {rooms[name]}")
    (OUT.parent / "PROVENANCE.md").write_text(
        "# Built-in demo audio: provenance\n\n"
        f"`speech/talker1..4.flac`: synthetic speech made once by `scripts/make_demo_speech.py` (seed {SEED}) with "
        f"{version} (Debian package espeak-ng) and pyroomacoustics {pra.__version__}. Voices "
        + ", ".join(f"{n} = `{v}` (speed {s}, pitch {p})" for n, (v, s, p) in TALKERS.items())
        + ". The sentences were written for this project. Each sentence is read at its own pitch, speed and level, "
        "as two to four phrases with their own SSML prosody (pitch, rate, volume), and each talker is heard in its "
        "own simulated room (image-source method): "
        + "; ".join(f"{n}: {w}" for n, w in rooms.items())
        + ". Resampled to 16 kHz (soxr), normalised to -23 dBFS RMS, 16-bit FLAC, 24 s each. Licence: CC0 1.0 "
        "(the text is ours; espeak-ng's output is not covered by its GPL).\n\n"
        "Chirps (exponential sine sweeps) and noises (white, pink, brown, hum, babble) are not stored: "
        "`fhmm_ppl.audio.demo` generates them deterministically from a seed at run time.\n"
    )


if __name__ == "__main__":
    main()
