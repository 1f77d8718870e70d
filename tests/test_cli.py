"""The command-line entry point: fast help (no heavy imports), version."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fhmm_ppl import __version__
from fhmm_ppl.cli import app


def test_help_and_version_in_process():
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "factorial HMMs" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from fhmm_ppl.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('jax', 'mlflow', 'librosa', 'numpyro', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def run_in_fresh_process(argv: list) -> subprocess.CompletedProcess:
    """``fhmm-ppl ARGV`` in a fresh interpreter, printing its exit code and the heavy modules it imported."""
    code = (
        "import sys; from fhmm_ppl.cli import app\n"
        f"try:\n    app({argv!r})\n"
        "except SystemExit as exit:\n    print('EXIT', exit.code)\n"
        "heavy = [m for m in ('jax', 'mlflow', 'librosa', 'numpyro', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_separate_reports_a_missing_mixture_before_loading_anything_heavy(tmp_path):
    out = run_in_fresh_process(["separate", str(tmp_path), str(tmp_path / "missing.wav")])
    assert "EXIT 1" in out.stdout and "HEAVY []" in out.stdout
    assert f"error: {tmp_path / 'missing.wav'}: no such file" in out.stderr


@pytest.mark.parametrize("command", ["run", "sweep", "validate"])
def test_a_missing_experiment_file_is_reported_before_loading_anything_heavy(tmp_path, command):
    out = run_in_fresh_process([command, str(tmp_path / "missing.yaml")])
    assert "EXIT 1" in out.stdout and "HEAVY []" in out.stdout
    assert out.stderr.strip() == f"error: {tmp_path / 'missing.yaml'}: no such experiment file"


def test_console_script_runs_as_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "fhmm_ppl.cli", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_compare_shows_the_state_counts_a_run_was_trained_with():
    from fhmm_ppl.cli import _states

    assert _states({"model.n_states": "16", "states.speech": "16", "states.noise": "16"}) == "16"
    assert _states({"model.n_states": "None", "states.speech": "32", "states.noise": "24"}) == "24-32"
    assert _states({"model.n_states": "None", "states.a": "32", "states.b": "32"}) == "32"
    assert _states({"model.n_states": "4"}) == "4" and _states({}) == "-"
