"""Generate the built-in demo speech once, with espeak-ng, as small FLAC files.

Four synthetic talkers (two male, two female espeak-ng voice variants) read
sentences written for this project. The output is resampled to 16 kHz,
normalised to -23 dBFS RMS and written as 16-bit FLAC into
``fhmm_ppl/data/demo/speech/``; ``PROVENANCE.md`` beside it records how.

Needs the Debian package ``espeak-ng`` (``apt-get install espeak-ng``). Not run
by tests or at run time: the FLAC files are shipped.

Run: ``python scripts/make_demo_speech.py``
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from fhmm_ppl.audio.io import resample

OUT = Path(__file__).resolve().parents[1] / "fhmm_ppl" / "data" / "demo" / "speech"
RATE = 16000
SECONDS = 24.0
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


def speak(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text], check=True)
        audio, rate = sf.read(tmp.name, dtype="float32")
    return audio, rate


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("Data at")[0].strip()
    for index, (name, (voice, speed, pitch)) in enumerate(TALKERS.items()):
        pieces, total = [], 0
        order = np.roll(np.arange(len(SENTENCES)), -6 * index)  # each talker starts elsewhere in the text
        for i in order:
            audio, rate = speak(SENTENCES[i], voice, speed, pitch)
            audio = resample(audio, rate, RATE)
            pieces += [audio, np.zeros(int(0.25 * RATE), np.float32)]
            total += len(audio) + int(0.25 * RATE)
            if total >= SECONDS * RATE:
                break
        signal = np.concatenate(pieces)[: int(SECONDS * RATE)]
        signal *= 10 ** (-23 / 20) / np.sqrt(np.mean(signal**2))
        sf.write(OUT / f"{name}.flac", np.clip(signal, -1, 1), RATE, subtype="PCM_16")
        print(f"{name}: {voice}, {len(signal) / RATE:.1f} s")
    (OUT.parent / "PROVENANCE.md").write_text(
        "# Built-in demo audio: provenance\n\n"
        f"`speech/talker1..4.flac`: synthetic speech made once by `scripts/make_demo_speech.py` with {version} "
        "(Debian package espeak-ng), voices "
        + ", ".join(f"{n} = `{v}` (speed {s}, pitch {p})" for n, (v, s, p) in TALKERS.items())
        + ". The sentences were written for this project. Resampled to 16 kHz (soxr), normalised to -23 dBFS RMS, "
        "16-bit FLAC, 24 s each. Licence: CC0 1.0 (the text is ours; espeak-ng's output is not covered by its GPL).\n\n"
        "Chirps (exponential sine sweeps) and noises (white, pink, brown, hum, babble) are not stored: "
        "`fhmm_ppl.audio.demo` generates them deterministically from a seed at run time.\n"
    )


if __name__ == "__main__":
    main()
