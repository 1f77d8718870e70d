"""The ``fhmm-ppl`` command-line interface.

Heavy libraries (jax, mlflow, librosa) are imported inside commands only, so
``fhmm-ppl --help`` answers quickly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from fhmm_ppl import __version__

app = typer.Typer(
    name="fhmm-ppl",
    help="Audio source separation with factorial HMMs as probabilistic programs.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: rendering it with rich costs ~0.5 s of imports on every --help.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fhmm-ppl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audio source separation with factorial HMMs as probabilistic programs."""


@app.command()
def info() -> None:
    """Print the versions of the numerical stack and the JAX backend in use."""
    import jax
    import numpyro
    import optax

    typer.echo(f"fhmm-ppl {__version__}")
    typer.echo(f"jax {jax.__version__} (backend: {jax.default_backend()}, devices: {jax.devices()})")
    typer.echo(f"numpyro {numpyro.__version__}, optax {optax.__version__}")


def _fail(err: BaseException, debug: bool) -> None:
    """One clear line on stderr and a non-zero exit (the traceback only with --debug)."""
    if debug:
        raise err
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=1)


SET_HELP = "Override a config entry, e.g. --set model.n_states=64 (repeatable)."


def _require_file(path: Path, debug: bool) -> None:
    """A missing experiment file is one line before the schema (and JAX, which it checks against) loads."""
    if not path.exists():
        _fail(ValueError(f"{path}: no such experiment file"), debug)
    if not path.is_file():
        _fail(ValueError(f"{path}: not a file (give the experiment's YAML file)"), debug)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Check an experiment file without running it: its schema, then its plug-ins, priors and data files."""
    _require_file(config, debug)
    from fhmm_ppl.experiment.config import load_config
    from fhmm_ppl.experiment.prepare import prepare

    try:
        cfg = load_config(config, set_ or [])
        variants = cfg.variants()  # validates every point of a sweep
        for _, variant in variants:
            prepare(variant, str(config))
        checked = f", checked at {len(variants)} points (range ends, choices)" if cfg.sweep.search == "optuna" else ""
        sweep_note = f"; {cfg.sweep.describe()}{checked}" if cfg.sweep.active else ""
    except Exception as err:
        _fail(err, debug)
    typer.echo(f"ok: {config} ({cfg.name}: {cfg.data.source} data, {cfg.model.emission}, "
               f"{cfg.model.n_states or 'per-source'} states, {cfg.training.method}{sweep_note})")


@app.command()
def run(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Run an experiment end to end and track it in MLflow."""
    _run(config, set_ or [], debug)


def _run(config: Path, overrides: list, debug: bool, serve_artifacts: bool = False) -> None:
    _require_file(config, debug)
    from fhmm_ppl.experiment.config import load_config

    try:
        cfg = load_config(config, overrides)
        from tqdm.auto import tqdm

        from fhmm_ppl.experiment.interrupts import Terminated, signals_raise
        from fhmm_ppl.experiment.prepare import prepare
        from fhmm_ppl.experiment.runner import run_experiment
        from fhmm_ppl.experiment.sweep import run_sweep, sweep_table

        for _, variant in cfg.variants():  # errors name the file, before any run is created
            prepare(variant, str(config))

        progress = lambda items, desc: tqdm(items, desc=desc, leave=False)
        with signals_raise():
            if cfg.sweep.active:
                result = run_sweep(cfg, progress=progress, on_status=lambda line: typer.echo(line),
                                   serve_artifacts=serve_artifacts)
            else:
                result = run_experiment(cfg, progress=progress, on_status=lambda line: typer.echo(line))
    except Exception as err:  # one line for the user; the run itself is already marked FAILED
        _fail(err, debug)
        return
    except (KeyboardInterrupt, Terminated) as err:  # the run is already marked KILLED
        signal_name = "SIGINT" if isinstance(err, KeyboardInterrupt) else "SIGTERM"
        typer.echo(f"interrupted ({signal_name}): the MLflow run is marked KILLED", err=True)
        raise typer.Exit(code=130 if isinstance(err, KeyboardInterrupt) else 143)
    if cfg.sweep.active:
        typer.echo("\n" + sweep_table(result.children, cfg.task))
        typer.echo(f"\nsweep parent run {result.run_id} with {len(result.children)} child runs in experiment "
                   f"{result.experiment_id} ({result.tracking_uri})")
    elif cfg.task == "classification":
        from fhmm_ppl.experiment.classify import report_markdown

        typer.echo("\n" + report_markdown(result.scores, result.scores["counts"], result.scores["n_tested"]))
    else:
        _print_summary(result.scores)
    if not cfg.sweep.active:
        typer.echo(f"\nrun {result.run_id} in experiment {result.experiment_id} ({result.tracking_uri})")
    typer.echo("open it with: fhmm-ppl ui   (or: fhmm-ppl compare)")


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="key=v1,v2 (repeatable), e.g. --grid model.n_states=16,32"),
    executor: Optional[str] = typer.Option(None, "--executor", help="sequential (default) or ray."),
    address: Optional[str] = typer.Option(None, "--address", help="An existing Ray cluster (default: a local one for the sweep)."),
    cpus_per_task: Optional[float] = typer.Option(None, "--cpus-per-task", help="CPUs per point on Ray (default 1)."),
    search: Optional[str] = typer.Option(None, "--search", help="grid (default) or optuna (ranges under sweep.space)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials of an optuna search."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Log to this MLflow server or store."),
    serve_artifacts: bool = typer.Option(False, "--serve-artifacts",
                                         help="Log through an MLflow server started over the store for the sweep."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Run a grid or an Optuna search of variants as nested MLflow runs under one parent, ending with a table."""
    options = {"sweep.executor": executor, "sweep.address": address, "sweep.cpus_per_task": cpus_per_task,
               "sweep.search": search, "sweep.trials": trials, "tracking.uri": tracking_uri}
    overrides = list(set_ or []) + [f"sweep.{g}" for g in grid or []]
    overrides += [f"{key}={value}" for key, value in options.items() if value is not None]
    _require_file(config, debug)
    from fhmm_ppl.experiment.config import load_config

    try:
        active = load_config(config, overrides).sweep.active
    except Exception as err:
        _fail(err, debug)
    if not active:
        _fail(ValueError("no grid: give --grid key=v1,v2, a sweep: section in the file, or --search optuna with sweep.space"),
              debug)
    _run(config, overrides, debug, serve_artifacts)


@app.command()
def compare(
    experiment: Optional[str] = typer.Argument(None, help="Experiment name (default: every experiment)."),
    limit: int = typer.Option(20, help="Most recent runs to show."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Runs' key metrics side by side in the terminal."""
    import os

    # An interactive look-up: fail within seconds when a tracking server is unreachable (MLflow's
    # defaults retry for minutes); the environment can still set its own values.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        from mlflow.tracking import MlflowClient

        from fhmm_ppl.experiment.tracking import tracking_uri

        client = MlflowClient(tracking_uri())
        if experiment:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = [e.name for e in client.search_experiments()]
                raise ValueError(f"no experiment named {experiment!r}; experiments: {', '.join(names) or 'none yet'}")
            ids = [found.experiment_id]
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=limit)
    except Exception as err:
        _fail(err, debug)
        return
    from fhmm_ppl.experiment.sweep_config import HEADLINE

    if not runs:
        from fhmm_ppl.experiment.tracking import tracking_uri

        where = f"experiment {experiment!r}" if experiment else "any experiment"
        typer.echo(f"no runs in {where} at {tracking_uri()}; start one with: fhmm-ppl run <experiment.yaml>")
        return
    columns = [c for task in ("separation", "classification") for c in HEADLINE[task]
               if any(c[1] in r.data.metrics for r in runs)]
    typer.echo(f"{'run':<9} {'name':<34} {'status':<9} {'task':<14} {'states':>6} {'emission':<17}"
               + "".join(f" {c:>11}" for c, _ in columns))
    for r in runs:
        p, m = r.data.params, r.data.metrics
        name = (r.info.run_name or "")[:34]
        task = r.data.tags.get("fhmm_ppl.task", "separation")
        emission = p.get("model.emission", "-") + (f"/{p['model.covariance_type']}" if p.get("model.emission") == "gaussian" else "")
        values = "".join(f" {m[k]:11.3f}" if k in m else f" {'-':>11}" for _, k in columns)
        typer.echo(f"{r.info.run_id[:8]:<9} {name:<34} {r.info.status:<9} {task:<14} {_states(p):>6} "
                   f"{emission:<17}{values}")


def _states(params: dict) -> str:
    """A run's states per source for ``compare``: ``model.n_states``, or where it was left to the
    training audio, the counts it gave (``states.<source>`` params): one number or a range."""
    given = params.get("model.n_states", "-")
    counts = sorted(int(v) for k, v in params.items() if k.startswith("states.") and v.isdigit())
    if given not in ("None", "") or not counts:
        return given
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"


def _print_summary(scores: dict) -> None:
    order = ["fhmm", "nmf", "mixture", "irm", "ibm"]
    methods = [m for m in order if m in scores] + [m for m in scores if m not in order]
    sources = list(next(iter(scores.values())))
    typer.echo(f"\n{'method':<9} {'source':<10} {'SDR':>7} {'SIR':>7} {'SAR':>7} {'SDRi':>7} {'SI-SDR':>7}")
    for method in methods:
        for name in sources:
            m = scores[method][name]
            typer.echo(f"{method:<9} {name:<10} {m['sdr']:7.2f} {m['sir']:7.2f} {m['sar']:7.2f} "
                       f"{m['sdr_improvement']:7.2f} {m['si_sdr']:7.2f}")


@app.command()
def separate(
    model: str = typer.Argument(..., help="A saved separator folder, an MLflow run id, or runs:/<id>/model."),
    mixture: Path = typer.Argument(..., help="Mixture audio file, or - for standard input (streamed)."),
    output: Path = typer.Option(Path("separated"), "-o", "--output",
                                help="Folder for the estimates, or - for raw PCM on standard output."),
    stream: bool = typer.Option(False, "--stream", help="Read, separate and write block by block (constant memory)."),
    lag: float = typer.Option(0.1, "--lag", help="With --stream: seconds of look-ahead per frame (0: causal)."),
    block: float = typer.Option(1.0, "--block", help="With --stream: seconds of audio read at a time."),
    unknown: Optional[List[str]] = typer.Option(None, "--unknown",
                                                help="A source to learn on this recording instead (repeatable)."),
    refine_iter: Optional[int] = typer.Option(None, "--refine-iter", help="EM iterations refining the trained noise on "
                                              "this recording (0: none; default: the separator's)."),
    refine: Optional[List[str]] = typer.Option(None, "--refine", help="A trained source to refine (repeatable; "
                                               "default: the separator's, usually noise)."),
    average_seconds: Optional[float] = typer.Option(None, "--average-seconds", help="Seconds over which the masks "
                                                    "average the noise's power (0: frame by frame; default: the separator's)."),
    match_level: Optional[bool] = typer.Option(None, "--match-level/--no-match-level", help="Scale the trained spectra "
                                               "to the recording's level first (default: the separator's)."),
    source_levels: Optional[bool] = typer.Option(None, "--source-levels/--no-source-levels", help="Give each source "
                                                 "not refined a level of its own, read off a first separation (twice "
                                                 "the time; default: the separator's)."),
    fit_seconds: Optional[float] = typer.Option(None, "--fit-seconds", help="Streams: seconds at the start that the "
                                                "separator fits its level and refined noise to first (0: none; default: "
                                                "60 for a file, 3 for standard input, whose output starts that late)."),
    live: bool = typer.Option(False, "--live", help="Streams: output from the first samples, separated as trained "
                              "until the --fit-seconds are in and by the separator fitted to them after (default: "
                              "hold them back; a live microphone wants this)."),
    no_phase: bool = typer.Option(False, "--no-phase", help="Every estimate keeps the mixture's phase (default: the "
                                  "separator's, which gives a hum's estimate a phase of its own)."),
    raw_input: bool = typer.Option(False, "--raw-input", help="Standard input is headerless mono PCM (--pcm, --rate)."),
    rate: Optional[int] = typer.Option(None, "--rate", help="Sample rate of --raw-input (default: the separator's)."),
    pcm: str = typer.Option("f32", "--pcm", help="Raw PCM format of --raw-input and of -o -: f32 or s16."),
    source: Optional[List[str]] = typer.Option(None, "--source",
                                               help="With -o -: the source(s) written, as channels (default: all)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Separate a recording with a trained separator (whole, or streamed with --stream; - for pipes)."""
    piped_in = str(mixture) == "-"
    if not piped_in and (not mixture.exists() or mixture.is_dir()):  # said before JAX, MLflow and the model load
        problem = "is a folder, not an audio file" if mixture.is_dir() else "no such file"
        _fail(ValueError(f"{mixture}: {problem}"), debug)
    if (raw_input or rate) and not piped_in:
        _fail(ValueError("--raw-input and --rate describe standard input; pass - as the mixture"), debug)
    if live and not (stream or piped_in or str(output) == "-"):
        _fail(ValueError("--live is for streams: pass --stream, or - as the mixture or the output"), debug)
    try:
        from fhmm_ppl.audio.io import read_audio, write_audio
        from fhmm_ppl.runtime import enable_compilation_cache
        from fhmm_ppl.separation import load
        from fhmm_ppl.separation.storage import saved_folder

        enable_compilation_cache()
        if Path(model).is_dir():
            folder = saved_folder(model)
        else:  # a run id or an MLflow URI: only then import MLflow
            from fhmm_ppl.experiment.pyfunc import separator_folder

            folder = separator_folder(model)
        separator = load(folder)
        if unknown:
            separator = separator.with_unknown(unknown)
        if refine_iter is not None or refine:
            separator = separator.with_refinement(separator.options.refine_iter if refine_iter is None else refine_iter,
                                                  refine or None)
        if average_seconds is not None:
            separator = separator.with_average(average_seconds)
        if match_level is not None:
            separator = separator.with_level_matching(match_level)
        if source_levels is not None:
            separator = separator.with_source_levels(source_levels)
        if no_phase:
            separator = separator.with_phase_sources([])
        import soundfile as sf

        from fhmm_ppl.separation.files import head_seconds, pcm_sink, separate_streaming
        from fhmm_ppl.separation.streaming import LONG_RECORDING, OFFLINE_LAG

        try:
            info = None if piped_in else sf.info(str(mixture))
        except Exception:  # read_audio below says what is wrong with the file, in one line
            info = None
        duration = info.duration if info is not None else 0.0
        if duration > LONG_RECORDING and not stream:
            head = head_seconds(mixture) if fit_seconds is None else fit_seconds
            trained = f", fitted to its first {head:g} s" if separator.fits_recording and head > 0 else ""
            typer.echo(f"{mixture}: {duration / 60:.1f} minutes, separated block by block with a {OFFLINE_LAG:g} s lag "
                       f"(whole-file smoothing to within 0.01 dB; memory bounded{trained})", err=True)
            stream, lag = True, OFFLINE_LAG
        piped_out = str(output) == "-"
        if stream or piped_in or piped_out:
            raw = (rate or separator.sample_rate, pcm) if raw_input else None
            sink = pcm_sink(separator, source, pcm) if piped_out else None
            if sink:
                typer.echo(f"standard output: raw {pcm} little-endian PCM at {separator.sample_rate} Hz, "
                           f"{len(sink[1])} channel(s): {', '.join(sink[1])}", err=True)
            for path in separate_streaming(separator, mixture, output, lag, block, duration, raw, sink, fit_seconds,
                                           live):
                typer.echo(str(path), err=piped_out)
            return

        signal, rate = read_audio(mixture, sample_rate=separator.sample_rate, min_samples=separator.options.stft.n_fft)
        if info is not None and (info.samplerate != rate or info.channels > 1):
            typer.echo(f"{mixture}: {info.channels} channel(s) at {info.samplerate} Hz read as mono at {rate} Hz "
                       "(the separator's rate); the estimates are written at that rate", err=True)
        for name, wave in separator.separate(signal).items():
            path = write_audio(output / f"{mixture.stem}_{name}.wav", wave, rate)
            typer.echo(str(path))
    except Exception as err:
        _fail(err, debug)


@app.command()
def ui(
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
) -> None:
    """Open the MLflow UI on 127.0.0.1 over the project's tracking store."""
    import os

    from fhmm_ppl.experiment.tracking import artifact_root, tracking_uri

    uri = tracking_uri()
    typer.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    sys.stdout.flush()
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    root = artifact_root(uri)
    if root:  # the same folder for runs logged directly and for those a sweep's server proxied
        args += ["--default-artifact-root", root, "--artifacts-destination", root]
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, args)  # become the server: Ctrl-C and signals reach it directly


if __name__ == "__main__":  # pragma: no cover
    app()
