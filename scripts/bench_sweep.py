"""The same 8-point sweep run sequentially and on Ray (a local cluster, one CPU per point), timed.

Each executor runs in a fresh process with fresh compilation and bytecode caches and a fresh
tracking store, so both pay the same start-up and compilation, and then once more over the
caches it left (a researcher's second sweep); Ray's wall time includes starting the local
cluster and the MLflow server its workers log through. Prints the wall times and the
speed-up, and checks that both sweeps found the same scores for every point.

    python scripts/bench_sweep.py                 # the demo experiment, 8 points (several minutes)
    python scripts/bench_sweep.py --quick         # smaller points, to try it out
    python scripts/bench_sweep.py --write-docs    # also write the table into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchdoc
import yaml

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
from mlflow.tracking import MlflowClient
client = MlflowClient(result.tracking_uri)
def seconds(run_id):
    info = client.get_run(run_id).info
    return (info.end_time - info.start_time) / 1000
print(json.dumps({json.dumps(o, sort_keys=True): [r.status, r.metrics.get("fhmm.mean.sdr_improvement"), seconds(r.run_id)]
                  for o, r in result.children}))
"""


def timed_sweep(experiment: dict, executor: str, folder: Path, cache: Path) -> tuple[float, float, dict]:
    """Wall seconds of one sweep in a fresh process, the cores its process used on average (CPU
    seconds / wall; Ray's workers are not its children, so not for Ray), and its
    ``{point: [status, SDRi, run seconds]}``."""
    folder.mkdir(parents=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**experiment, "sweep": {**GRID, "executor": executor}}))
    # PYTHONPYCACHEPREFIX: bytecode cached as for an installed package (this machine sets
    # PYTHONDONTWRITEBYTECODE, which costs every fresh worker seconds of imports).
    env = {**os.environ, "FHMM_PPL_CACHE": str(cache / "compiled"), "PYTHONPYCACHEPREFIX": str(cache / "bytecode"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / wall
    if out.returncode != 0:
        raise SystemExit(f"the {executor} sweep failed:\n{out.stderr[-3000:]}")
    return wall, cores, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller points (2 s test audio, 10 EM iterations, one model set)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    experiment = QUICK if args.quick else FULL
    walls, cores, scores = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("sequential", "ray"):
            cache = Path(tmp) / executor / "cache"
            for cold in ("cold", "warm"):  # a first sweep, then the same again over its caches
                walls[executor, cold], cores[executor, cold], scores[executor, cold] = timed_sweep(
                    experiment, executor, Path(tmp) / executor / cold, cache)
                print(f"{executor}, {cold} caches: {walls[executor, cold]:.1f} s", flush=True)
    # One thread per Ray point (runtime.one_thread_env) sums in another order: SDRi agrees to ~1e-3 dB.
    seq, ray = scores["sequential", "warm"], scores["ray", "warm"]
    same = all(seq[k][0] == ray[k][0] == "FINISHED" and abs(seq[k][1] - ray[k][1]) < 0.01 for k in seq)
    for key in seq:
        print(f"{key}: SDRi {seq[key][1]:.3f} / {ray[key][1]:.3f}, run {seq[key][2]:.1f} s / {ray[key][2]:.1f} s "
              "(sequential / ray, warm caches)")
    point_seconds = {k: sum(v[2] for v in scores[k].values()) for k in scores}
    rows = ["| executor | caches | wall (s) | speed-up | point-seconds / wall |", "|---|---|---|---|---|"]
    for executor, label in (("sequential", "sequential (one process)"),
                            ("ray", f"Ray, local cluster, 1 CPU per point ({os.cpu_count()} at once)")):
        for cold in ("cold", "warm"):
            key = (executor, cold)
            rows.append(f"| {label} | {cold} | {walls[key]:.1f} | {walls['sequential', cold] / walls[key]:.2f} | "
                        f"{point_seconds[key] / walls[key]:.2f} |")
    note = (f"8 points ({' x '.join(f'{k} {v}' for k, v in GRID.items())}), "
            f"{'quick points' if args.quick else 'the demo experiment'}. Cold: fresh compilation and bytecode caches; "
            "warm: the same sweep again over them. Point-seconds / wall: the points' run times summed over the "
            "wall time (how many points ran at once, on average). The sequential process kept "
            f"{cores['sequential', 'warm']:.2f} cores busy on average (warm). Every point the same SDRi on both "
            f"(to 0.01 dB): {same}.")
    text = "\n".join(rows) + "\n\n" + note
    print("\n" + text)
    if args.write_docs:
        command = "python scripts/bench_sweep.py" + (" --quick" if args.quick else "")
        benchdoc.write("bench_sweep", benchdoc.stamp(command) + "\n\n" + text)


if __name__ == "__main__":
    main()
