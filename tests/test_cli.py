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


def test_separate_reports_a_missing_mixture_before_loading_anything_heavy(tmp_path):
    code = (
        "import sys; from fhmm_ppl.cli import app\n"
        f"try:\n    app(['separate', {str(tmp_path)!r}, {str(tmp_path / 'missing.wav')!r}])\n"
        "except SystemExit as exit:\n    print('EXIT', exit.code)\n"
        "heavy = [m for m in ('jax', 'mlflow', 'librosa', 'numpyro', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "EXIT 1" in out.stdout and "HEAVY []" in out.stdout
    assert f"error: {tmp_path / 'missing.wav'}: no such file" in out.stderr


@pytest.mark.parametrize("command", ["run", "sweep", "validate"])
def test_a_missing_experiment_file_is_reported_before_loading_anything_heavy(tmp_path, command):
    code = (
        "import sys; from fhmm_ppl.cli import app\n"
        f"try:\n    app([{command!r}, {str(tmp_path / 'missing.yaml')!r}])\n"
        "except SystemExit as exit:\n    print('EXIT', exit.code)\n"
        "heavy = [m for m in ('jax', 'mlflow', 'librosa', 'numpyro', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "EXIT 1" in out.stdout and "HEAVY []" in out.stdout
    assert out.stderr.strip() == f"error: {tmp_path / 'missing.yaml'}: no such experiment file"


def test_console_script_runs_as_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "fhmm_ppl.cli", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout
