"""The same 8-point sweep run sequentially and on Ray (a local cluster, one CPU per point), timed.

Each executor runs in a fresh process with a fresh compilation cache and a fresh tracking
store, so both pay the same start-up and compilation; Ray's wall time includes starting the
local cluster and the MLflow server its workers log through. Prints the wall times and the
speed-up, and checks that both sweeps found the same scores for every point.

    python scripts/bench_sweep.py                 # the demo experiment, 8 points (several minutes)
    python scripts/bench_sweep.py --quick         # smaller points, to try it out
    python scripts/bench_sweep.py --write-docs    # also write the table into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import benchdoc

#: 8 points: 4 state counts x 2 likelihood scales on the demo's speech-in-pink-noise task.
GRID = {"model.n_states": [8, 12, 16, 24], "inference.likelihood_scale": [0.5, 1.0]}
FULL = {"name": "bench_sweep", "data": {"source": "demo", "task": "speech_noise", "noise": "pink"},
        "evaluation": {"baselines": ["irm"]}}
QUICK = {**FULL, "data": {**FULL["data"], "test_seconds": 2.0}, "training": {"max_iter": 10, "n_models": 1}}

#: Runs one sweep in this fresh process and prints its per-point scores as JSON on the last line.
CHILD = """
import json, sys, yaml
from fhmm_ppl.experiment.config import parse_config
from fhmm_ppl.experiment.sweep import run_sweep
result = run_sweep(parse_config(yaml.safe_load(open(sys.argv[1]))))
print(json.dumps({json.dumps(o, sort_keys=True): [r.status, r.metrics.get("fhmm.mean.sdr_improvement")]
                  for o, r in result.children}))
"""


def timed_sweep(experiment: dict, executor: str, folder: Path) -> tuple[float, dict]:
    """Wall seconds of one sweep in a fresh process, and its ``{point: [status, SDRi]}``."""
    folder.mkdir(parents=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**experiment, "sweep": {**GRID, "executor": executor}}))
    env = {**os.environ, "FHMM_PPL_CACHE": str(folder / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"the {executor} sweep failed:\n{out.stderr[-3000:]}")
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller points (2 s test audio, 10 EM iterations, one model set)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    experiment = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        seq_wall, seq_scores = timed_sweep(experiment, "sequential", Path(tmp) / "sequential")
        print(f"sequential: {seq_wall:.1f} s", flush=True)
        ray_wall, ray_scores = timed_sweep(experiment, "ray", Path(tmp) / "ray")
        print(f"ray:        {ray_wall:.1f} s", flush=True)
    same = all(seq_scores[k][0] == ray_scores[k][0] == "FINISHED" and abs(seq_scores[k][1] - ray_scores[k][1]) < 1e-3
               for k in seq_scores)
    rows = [
        "| executor | wall (s) | speed-up |",
        "|---|---|---|",
        f"| sequential (one process) | {seq_wall:.1f} | 1.00 |",
        f"| Ray, local cluster, 1 CPU per point ({os.cpu_count()} at once) | {ray_wall:.1f} | {seq_wall / ray_wall:.2f} |",
    ]
    note = (f"8 points ({' x '.join(f'{k} {v}' for k, v in GRID.items())}), "
            f"{'quick points' if args.quick else 'the demo experiment'}; every point the same SDRi on both: {same}.")
    text = "\n".join(rows) + "\n\n" + note
    print("\n" + text)
    if args.write_docs:
        command = "python scripts/bench_sweep.py" + (" --quick" if args.quick else "")
        benchdoc.write("bench_sweep", benchdoc.stamp(command) + "\n\n" + text)


if __name__ == "__main__":
    main()
