"""Create or migrate the schema with Alembic (``dust db upgrade``), and say where it is
(``dust db current``, ``dust db history``, ``dust health``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

MIGRATIONS = Path(__file__).parent / "migrations"


class UnknownRevision(ValueError):
    """A revision that is not one of Dust's migrations."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def heads() -> set[str]:
    """The revisions the code expects the database at."""
    return set(scripts().get_heads())


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to ``revision``; :class:`UnknownRevision` when there is no such revision."""
    if revision not in ("head", "heads"):
        try:
            scripts().get_revision(revision)
        except CommandError as exc:
            raise UnknownRevision(str(exc)) from None
        if not _known(revision):
            raise UnknownRevision(f"no revision {revision!r}")
    command.upgrade(alembic_config(url), revision)


def _known(revision: str) -> bool:
    try:
        return scripts().get_revision(revision) is not None
    except CommandError:
        return False


def current(url: str) -> set[str]:
    """The revisions the database is at (empty: no Dust schema)."""
    from dust.worker.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    doc: str


def history() -> list[Revision]:
    """Every migration, newest first."""
    found = []
    for script in scripts().walk_revisions():
        down = script.down_revision
        found.append(
            Revision(script.revision, down if isinstance(down, str) else None, script.doc or "")
        )
    return found
