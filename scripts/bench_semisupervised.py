"""Semi-supervised separation: speech SDRi of supervised and semi-supervised FHMMs and NMF, one table.

Per task: the supervised FHMM (both sources trained on clean audio), the semi-supervised FHMM (the
same speech HMMs; the other source learnt on the test mixture by ``Separator.adapt``, once per
model set), for the complex-Gaussian emission and for the default (log-mel) separator; supervised
KL-NMF and semi-supervised KL-NMF (the speech dictionary from clean speech; the other dictionary
and every activation learnt on the mixture). SDRi is BSS-Eval SDR of the speech estimate minus that
of the mixture. Tasks: the six demo tasks, or with ``--real`` the real-speech tasks (two talkers
against the six noises at 0 dB; ``fhmm_ppl.audio.real``).

    .venv/bin/python scripts/bench_semisupervised.py            # the table in docs/separation.md
    .venv/bin/python scripts/bench_semisupervised.py --real     # real speech (../shared/data/real-audio)
    .venv/bin/python scripts/bench_semisupervised.py --unknown-states 8 --tasks speech+pink
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fhmm_ppl.audio.tasks import demo_task
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator
from fhmm_ppl.separation.baselines import fit_semi_supervised_nmf, fit_supervised_nmf
from fhmm_ppl.settings import ModelSettings, TrainingSettings

TASKS = {
    "speech+white": ("speech_noise", "white"), "speech+babble": ("speech_noise", "babble"),
    "speech+pink": ("speech_noise", "pink"), "speech+hum": ("speech_noise", "hum"),
    "speech+chirps": ("speech_chirp", "pink"), "two talkers": ("two_talkers", "pink"),
}
REAL_AUDIO = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-audio")
REAL_TALKERS = ("dev1_female4_src_1", "dev1_male4_src_2")
#: The FHMM separators compared (flat options): complex Gaussian, and the library's default.
SEPARATORS = {"FHMM CG": {"emission": "complex_gaussian", "n_models": 3}, "FHMM log-mel": {}}
COLUMNS = tuple(f"{label} {kind}" for label in SEPARATORS for kind in ("supervised", "semi")) + (
    "NMF supervised", "NMF semi")


def speech_sdri(task, separate) -> float:
    """Speech SDRi (dB) of ``separate(mixture) -> {name: (n,)}`` on the task's mixture."""
    mixture, reference = task.mixtures[0], task.references[0]
    names = list(reference)
    references = np.stack([reference[n] for n in names])
    estimates = separate(mixture)
    scored = bss_eval(references, np.stack([estimates[n] for n in names])).sdr
    floor = bss_eval(references, np.stack([mixture] * len(names))).sdr
    return float(scored[0] - floor[0])


def run_task(task, args) -> dict[str, float]:
    """Every column's SDRi on one task."""
    other = [n for n in task.train if n != "speech"][0]
    out = {}
    for label, flat in SEPARATORS.items():
        options = {"n_states": args.n_states, "max_iter": args.max_iter, "seed": args.seed,
                   "unknown_states": args.unknown_states, "adapt_iter": args.adapt_iter, **flat}
        if args.unknown_prior:
            options["unknown_priors"] = {"psd": None if args.unknown_prior == "none" else {"name": args.unknown_prior}}
        supervised = fit_separator(task.train, task.sample_rate, **options)
        out[f"{label} supervised"] = speech_sdri(task, supervised.separate)
        out[f"{label} semi"] = speech_sdri(task, supervised.with_unknown(other).separate)
    stft_config = supervised.options.stft  # the default separator's
    nmf = fit_supervised_nmf(task.train, args.nmf_components, stft_config, seed=args.seed)
    semi_nmf = fit_semi_supervised_nmf({"speech": task.train["speech"]}, other, args.nmf_components,
                                       args.unknown_components, stft_config, seed=args.seed)
    out["NMF supervised"], out["NMF semi"] = speech_sdri(task, nmf.separate), speech_sdri(task, semi_nmf.separate)
    return out


def tasks(args) -> dict:
    if args.real:
        from fhmm_ppl.audio.real import real_tasks

        return {t.name.replace("dev1_", "").replace("4_src_", ""): t
                for t in real_tasks(args.real, talkers=REAL_TALKERS, snrs=(0.0,), pairs=())}
    return {label: demo_task(*TASKS[label], test_seconds=args.test_seconds) for label in args.tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--real", metavar="FOLDER", nargs="?", const=REAL_AUDIO,
                        help=f"real-speech tasks from the recordings in FOLDER (default {REAL_AUDIO})")
    parser.add_argument("--n-states", type=int, default=ModelSettings().n_states, help="states per trained source")
    parser.add_argument("--max-iter", type=int, default=TrainingSettings().max_iter, help="EM iterations per source")
    parser.add_argument("--unknown-states", type=int, default=ModelSettings().unknown_states)
    parser.add_argument("--adapt-iter", type=int, default=TrainingSettings().adapt_iter)
    parser.add_argument("--unknown-prior", help="prior on the unknown sources' spectra (none: flat; default: "
                        "the settings' model.unknown_priors)")
    parser.add_argument("--nmf-components", type=int, default=32)
    parser.add_argument("--unknown-components", type=int, default=8, help="NMF atoms learnt on the mixture")
    parser.add_argument("--test-seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = {}
    for label, task in tasks(args).items():
        rows[label] = run_task(task, args)
        print(f"{label:28s}" + "".join(f"{rows[label][c]:8.2f}" for c in COLUMNS), flush=True)
    prior = args.unknown_prior or ModelSettings().unknown_priors or "the model's"
    print(f"\nspeech SDRi (dB); FHMM {args.n_states or 'from training length'} states per trained source, {args.unknown_states} per unknown "
          f"source (spectra prior: {prior}), {args.adapt_iter} adaptation iterations; NMF {args.nmf_components} "
          f"atoms, {args.unknown_components} learnt; mixtures at 0 dB SNR\n")
    print("| task | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[c]:.2f}" for c in COLUMNS) + " |")
    means = {c: np.mean([row[c] for row in rows.values()]) for c in COLUMNS}
    print("| mean | " + " | ".join(f"**{means[c]:.2f}**" for c in COLUMNS) + " |")
    for label in SEPARATORS:
        gap = means[f"{label} supervised"] - means[f"{label} semi"]
        print(f"{label} semi-supervised: {gap:.2f} dB below supervised, "
              f"{means[f'{label} semi'] - means['NMF semi']:+.2f} dB against semi-supervised NMF")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
