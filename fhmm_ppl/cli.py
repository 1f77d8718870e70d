"""The ``fhmm-ppl`` command-line interface.

Heavy libraries (jax, mlflow, librosa) are imported inside commands only, so
``fhmm-ppl --help`` answers quickly.
"""

from __future__ import annotations

import typer

from fhmm_ppl import __version__

app = typer.Typer(
    name="fhmm-ppl",
    help="Audio source separation with factorial HMMs as probabilistic programs.",
    no_args_is_help=True,
    add_completion=False,
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


if __name__ == "__main__":  # pragma: no cover
    app()
