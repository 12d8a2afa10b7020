"""``dust``, the command line: ``main.py`` puts together one module per command group."""

from __future__ import annotations

import sys

import typer

from dust.worker.settings import ConfigError, get_settings


def main() -> None:
    """The ``dust`` command. A bad configuration is one line and exit 2, found before the
    commands are loaded: the Celery app they use reads the settings as it is imported."""
    try:
        get_settings()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    from dust.cli.main import main as run  # lazy: only once the settings are known good

    run()
