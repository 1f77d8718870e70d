"""Semi-supervised separation on the six demo tasks: speech SDRi of four separators, one table.

Per task: the supervised complex-Gaussian FHMM (both sources trained on clean audio; an ensemble
of ``n_models`` model sets, the default 3), the semi-supervised FHMM (the same speech HMMs; the
other source learnt on the test mixture by ``Separator.adapt``, once per model set), supervised KL-NMF and semi-supervised KL-NMF (the speech dictionary from
clean speech; the other dictionary and every activation learnt on the mixture). SDRi is BSS-Eval
SDR of the speech estimate minus that of the mixture.

    .venv/bin/python scripts/bench_semisupervised.py            # the table in docs/separation.md
    .venv/bin/python scripts/bench_semisupervised.py --unknown-states 8 --tasks speech+pink
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fhmm_ppl.audio.tasks import demo_task
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import Separator, fit_separator
from fhmm_ppl.separation.adaptation import Adaptation
from fhmm_ppl.separation.baselines import fit_semi_supervised_nmf, fit_supervised_nmf
from fhmm_ppl.settings import ModelSettings, TrainingSettings

TASKS = {
    "speech+white": ("speech_noise", "white"), "speech+babble": ("speech_noise", "babble"),
    "speech+pink": ("speech_noise", "pink"), "speech+hum": ("speech_noise", "hum"),
    "speech+chirps": ("speech_chirp", "pink"), "two talkers": ("two_talkers", "pink"),
}
COLUMNS = ("FHMM supervised", "FHMM semi-supervised", "NMF supervised", "NMF semi-supervised")


def speech_sdri(task, separate) -> float:
    """Speech SDRi (dB) of ``separate(mixture) -> {name: (n,)}`` on the task's mixture."""
    mixture, reference = task.mixtures[0], task.references[0]
    names = list(reference)
    references = np.stack([reference[n] for n in names])
    estimates = separate(mixture)
    scored = bss_eval(references, np.stack([estimates[n] for n in names])).sdr
    floor = bss_eval(references, np.stack([mixture] * len(names))).sdr
    return float(scored[0] - floor[0])


def run_task(label: str, args) -> dict[str, float]:
    """The four SDRi of one task."""
    name, noise_kind = TASKS[label]
    task = demo_task(name, noise_kind, test_seconds=args.test_seconds)
    other = [n for n in task.train if n != "speech"][0]
    supervised = fit_separator(task.train, task.sample_rate, emission="complex_gaussian", n_states=args.n_states,
                               max_iter=args.max_iter, seed=args.seed)
    adaptation = Adaptation((other,), args.unknown_states, args.adapt_iter)
    semi = Separator([{"speech": member["speech"]} for member in supervised.members], task.sample_rate,
                     supervised.options, adaptation=adaptation)
    nmf = fit_supervised_nmf(task.train, args.nmf_components, supervised.options.stft, seed=args.seed)
    semi_nmf = fit_semi_supervised_nmf({"speech": task.train["speech"]}, other, args.nmf_components,
                                       args.unknown_components, supervised.options.stft, seed=args.seed)
    return dict(zip(COLUMNS, (speech_sdri(task, s.separate) for s in (supervised, semi, nmf, semi_nmf))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--n-states", type=int, default=16, help="states per trained source")
    parser.add_argument("--max-iter", type=int, default=20, help="EM iterations training each source")
    parser.add_argument("--unknown-states", type=int, default=ModelSettings().unknown_states)
    parser.add_argument("--adapt-iter", type=int, default=TrainingSettings().adapt_iter)
    parser.add_argument("--nmf-components", type=int, default=32)
    parser.add_argument("--unknown-components", type=int, default=8, help="NMF atoms learnt on the mixture")
    parser.add_argument("--test-seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = {label: run_task(label, args) for label in args.tasks}
    print(f"speech SDRi (dB); FHMM {args.n_states} states per trained source, {args.unknown_states} per unknown "
          f"source, {args.adapt_iter} adaptation iterations; NMF {args.nmf_components} atoms, "
          f"{args.unknown_components} learnt; {args.test_seconds:g} s mixtures at 0 dB SNR\n")
    print("| task | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[c]:.2f}" for c in COLUMNS) + " |")
    means = {c: np.mean([row[c] for row in rows.values()]) for c in COLUMNS}
    print("| mean | " + " | ".join(f"{means[c]:.2f}" for c in COLUMNS) + " |")
    gap = means[COLUMNS[0]] - means[COLUMNS[1]]
    print(f"\nsemi-supervised FHMM: {gap:.2f} dB below supervised, "
          f"{means[COLUMNS[1]] - means[COLUMNS[3]]:+.2f} dB against semi-supervised NMF; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
