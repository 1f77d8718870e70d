"""A level per source (``inference.source_levels``) against the common level alone, where the
sources' loudness changed apart from their training audio and where it did not.

Three task sets, each separated by the default separator and by the same trained models with
``source_levels`` on: the demo's speech against sweeps (trained 10 dB apart, mixed at equal power;
three seeds), real talkers against the real benchmark's six noises at 0 dB (their training levels;
``scripts/bench_level.py``'s 18 tasks), and the real benchmark's four talker pairs, as mixed and
with the first talker 6 dB louder and the second 6 dB quieter. Prints each task's SDR improvement
(the speech's; both talkers' mean for a pair) and the levels read, and the means.

    python scripts/bench_source_levels.py [--sets chirps noises pairs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REAL_AUDIO = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-audio")
TALKERS = ("dev1_female4_src_1", "dev1_male4_src_2", "arctic_aew")
NOISES = ("pink", "dishes", "hum", "babble", "brown_modulated", "bike")
APART_DB = 6.0


def sdri(separator, references: dict, names: list) -> float:
    """Mean SDR improvement over ``names`` of ``separator`` on the sum of ``references``."""
    from fhmm_ppl.metrics import separation_report

    mixture = np.sum([references[n] for n in references], axis=0).astype(np.float32)
    estimates = separator.separate(mixture)
    order = list(references)
    report = separation_report(np.stack([references[n] for n in order]), np.stack([estimates[n] for n in order]), mixture)
    return float(np.mean([report["sdr_improvement"][order.index(n)] for n in names]))


def compare(label: str, separator, references: dict, names: list) -> list[float]:
    own = separator.with_source_levels(True)
    mixture = np.sum(list(references.values()), axis=0).astype(np.float32)
    levels = own.refine(mixture).source_levels or {}
    scores = [sdri(separator, references, names), sdri(own, references, names)]
    print(f"{label:<52}{scores[0]:8.2f}{scores[1]:8.2f}   " + ", ".join(f"{n} {v:+.1f}" for n, v in levels.items()), flush=True)
    return scores


def main() -> None:
    from fhmm_ppl.audio.real import TALKER_PAIRS, speech_noise_task, talker_pair_task
    from fhmm_ppl.audio.tasks import demo_task
    from fhmm_ppl.separation import fit_separator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=REAL_AUDIO)
    parser.add_argument("--sets", nargs="+", default=["chirps", "noises", "pairs"], choices=["chirps", "noises", "pairs"])
    args = parser.parse_args()
    rows: dict[str, list] = {}
    print(f"{'task':<52}{'common':>8}{'own':>8}   levels read (dB from the common level)")
    if "chirps" in args.sets:
        for seed in (0, 1, 2):
            task = demo_task("speech_chirp", seed=seed)
            separator = fit_separator(task.train, task.sample_rate)
            rows.setdefault("speech against sweeps (demo)", []).append(
                compare(f"{task.name} seed {seed}", separator, task.references[0], ["speech"]))
    if "noises" in args.sets:
        for talker in TALKERS:
            for kind in NOISES:
                task = speech_noise_task(args.folder, talker, kind, 0.0)
                separator = fit_separator(task.train, task.sample_rate)
                rows.setdefault("real speech against noise", []).append(
                    compare(task.name, separator, task.references[0], ["speech"]))
    if "pairs" in args.sets:
        for pair in TALKER_PAIRS:
            task = talker_pair_task(args.folder, *pair)
            separator = fit_separator(task.train, task.sample_rate)
            names = list(task.references[0])
            rows.setdefault("real talker pairs", []).append(compare(task.name, separator, task.references[0], names))
            apart = {n: task.references[0][n] * np.float32(10 ** ((APART_DB if i == 0 else -APART_DB) / 20))
                     for i, n in enumerate(names)}
            rows.setdefault(f"real talker pairs, {APART_DB:g} dB apart either way", []).append(
                compare(f"{task.name}, apart", separator, apart, names))
    print("\n| tasks | common level (default) | a level per source |\n|---|---:|---:|")
    for label, scores in rows.items():
        common, own = np.mean(scores, axis=0)
        print(f"| {label} ({len(scores)}) | {common:.2f} | {own:.2f} |")


if __name__ == "__main__":
    main()
