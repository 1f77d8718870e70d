"""Start-up and compilation of the CLI, each command in a fresh process, over one temporary cache folder.

Measures, as a user meets them:

1. ``fhmm-ppl run experiments/speech_noise.yaml`` twice: the first run fills the JAX persistent
   compilation cache (and numba's), the second reads it;
2. a separator trained on the demo data (``fit_separator``, the default options; not timed), then
   ``fhmm-ppl separate`` on mixtures of lengths never separated before (``--lengths``, in seconds;
   by default 20 s and 37 s, then 18 s and 40 s, which fall in the same frame buckets as those two
   at hop 256 and 16 kHz: 1280 and 2560 frames).

For each command: wall seconds of the whole process (interpreter start included), and the
seconds JAX spent compiling, from its monitoring events: tracing to jaxprs, lowering to MLIR and
the backend compile (which, on a persistent-cache hit, is the time to read the cached kernel),
with the numbers of XLA compilations and cache hits.

Python's bytecode is cached too (``PYTHONPYCACHEPREFIX`` in the same temporary folder, warmed by
importing the commands' modules once before anything is timed), as an installed package's ``.pyc``
files are: an environment with ``PYTHONDONTWRITEBYTECODE`` set otherwise compiles the sources of
numpy, JAX, scikit-learn and MLflow again in every process (about 6 s here). ``--no-bytecode-cache``
measures with the environment as it is.

Run: ``python scripts/bench_startup.py`` (about five minutes on two cores). The caches and the
MLflow store live in a temporary folder (``FHMM_PPL_CACHE``, ``MLFLOW_TRACKING_URI``), never in the
user's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: JAX's monitoring events whose durations make up compilation.
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "backend",
}
#: Modules imported once, untimed, to fill the bytecode cache (what an installed package ships compiled).
WARM_IMPORTS = ("fhmm_ppl.cli", "fhmm_ppl.experiment.runner", "fhmm_ppl.experiment.sweep", "fhmm_ppl.experiment.plots",
                "fhmm_ppl.separation", "fhmm_ppl.audio.io", "fhmm_ppl.audio.tasks", "mlflow", "mlflow.tracking",
                "tqdm.auto", "soundfile", "matplotlib.pyplot")
#: Counted events: XLA compilations written to the cache, and kernels read from it.
COUNTED_EVENTS = {"/jax/compilation_cache/cache_misses": "written", "/jax/compilation_cache/cache_hits": "hits"}


def child(report: Path, argv: list[str]) -> None:
    """Run the CLI with ``argv`` in this process, writing compile seconds and counts to ``report``."""
    import jax.monitoring

    seconds: defaultdict[str, float] = defaultdict(float)
    counts: Counter = Counter()

    def on_duration(event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            seconds[COMPILE_EVENTS[event]] += duration
            counts[COMPILE_EVENTS[event]] += 1

    def on_event(event: str, **_) -> None:
        if event in COUNTED_EVENTS:
            counts[COUNTED_EVENTS[event]] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    from fhmm_ppl.cli import app

    try:
        code = app(argv, standalone_mode=False)  # the command's exit code (None when it returns)
    finally:
        report.write_text(json.dumps({"seconds": dict(seconds), "counts": dict(counts)}))
    sys.exit(code or 0)


def fit_model(folder: Path) -> None:
    """Train the default separator on the demo task's training audio and save it in ``folder``."""
    from fhmm_ppl.audio.tasks import demo_task
    from fhmm_ppl.separation import fit_separator

    task = demo_task("speech_noise")
    fit_separator(task.train, task.sample_rate).save(folder)


def write_mixtures(folder: Path, lengths: list[float]) -> list[Path]:
    """Mixtures of the demo task's test speech and noise, tiled to each length (seconds)."""
    import numpy as np

    from fhmm_ppl.audio.io import write_audio
    from fhmm_ppl.audio.tasks import demo_task

    task = demo_task("speech_noise")
    mixture = task.mixtures[0]
    paths = []
    for seconds in lengths:
        n = int(round(seconds * task.sample_rate))
        path = folder / f"mix_{seconds:g}s.wav"
        write_audio(path, np.resize(mixture, n), task.sample_rate)
        paths.append(path)
    return paths


def timed(argv: list[str], env: dict, work: Path, label: str) -> dict:
    """Wall seconds and compile figures of one fresh process running ``fhmm-ppl argv``."""
    report = work / f"report_{abs(hash(label))}.json"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", str(report), "--", *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    figures = json.loads(report.read_text())
    seconds, counts = figures["seconds"], figures["counts"]
    return {"label": label, "wall": wall, "compile": sum(seconds.values()), **{k: seconds.get(k, 0.0) for k in
            ("trace", "lower", "backend")}, "compiled": counts.get("backend", 0) - counts.get("hits", 0),
            "hits": counts.get("hits", 0)}


def table(rows: list[dict]) -> str:
    """A Markdown table of ``timed``'s rows."""
    head = (f"| {'command':<30} | wall s | compile s | trace s | lower s | backend s | XLA compilations | cache hits |\n"
            f"|{'-' * 32}|--------|-----------|---------|---------|-----------|------------------|------------|")
    lines = [f"| {r['label']:<30} | {r['wall']:6.1f} | {r['compile']:9.1f} | {r['trace']:7.1f} | {r['lower']:7.1f} | "
             f"{r['backend']:9.1f} | {r['compiled']:16d} | {r['hits']:10d} |" for r in rows]
    return "\n".join([head] + lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fit", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lengths", type=float, nargs="+", default=[20.0, 37.0, 18.0, 40.0],
                        help="mixture lengths (s) separated one after another, each in a fresh process")
    parser.add_argument("--skip-run", action="store_true", help="measure only the separate command")
    parser.add_argument("--no-bytecode-cache", action="store_true", help="leave PYTHONDONTWRITEBYTECODE as it is")
    parser.add_argument("argv", nargs="*")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.argv)
        return
    if args.fit:
        fit_model(args.fit)
        return
    with tempfile.TemporaryDirectory(prefix="fhmm-bench-startup-") as tmp:
        work = Path(tmp)
        (work / "mlflow").mkdir()
        env = dict(os.environ, FHMM_PPL_CACHE=str(work / "cache"),
                   MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
            subprocess.run([sys.executable, "-c", "; ".join(f"import {m}" for m in WARM_IMPORTS)], env=env, cwd=ROOT,
                           check=True)
        rows = []
        if not args.skip_run:
            for attempt in ("first", "second"):
                label = f"run speech_noise.yaml ({attempt})"
                rows.append(timed(["run", "experiments/speech_noise.yaml"], env, work, label))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        subprocess.run([sys.executable, __file__, "--fit", str(work / "model")], env=env, cwd=ROOT, check=True)
        for path in write_mixtures(work, args.lengths):
            rows.append(timed(["separate", str(work / "model"), str(path), "-o", str(work / "out")], env, work,
                              f"separate a {path.stem[4:]} mixture"))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        print()
        print(table(rows))


if __name__ == "__main__":
    main()
