"""A PostgreSQL cluster of the benchmark's own, configured as a production server would be.

A shared development server usually runs PostgreSQL's defaults (``max_wal_size`` 1 GB,
``min_wal_size`` 80 MB, ``checkpoint_timeout`` 5 min, ``shared_buffers`` 128 MB), which a
production server does not: there a drain of 200,000 events (520 MiB of WAL) starts a
checkpoint by WAL volume beside the timed ones, and with too few WAL segments kept for reuse
the backends create new ones during the drain, holding the WAL write lock while every commit
waits (BENCHMARKS.md). A benchmark that measures latency beside a drain can run against a
cluster of its own instead:

    with production_cluster() as url:        # a SQLAlchemy URL, database "dust_bench"
        ...                                  # the cluster is stopped and removed on exit

    .venv/bin/python bench/pg_cluster.py     # prints the URL, runs until Ctrl-C / SIGTERM
    .venv/bin/python bench/pg_cluster.py --set max_wal_size=16GB --port 9115

``initdb`` into a temporary folder with the newest ``/usr/lib/postgresql/*/bin`` (or
``DUST_PG_BIN``), listening on 127.0.0.1 only at ``--port`` (default
``DUST_PG_CLUSTER_PORT``, else a free port), trust authentication for user ``postgres``.
Run as root, the server runs as the ``postgres`` user (PostgreSQL refuses root).

Durability is never traded for speed here: ``fsync``, ``synchronous_commit`` and
``full_page_writes`` stay on, and overriding them is refused. README, *Running in
production*, says which of these settings Dust needs and why.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

#: What a production server for Dust on a small machine (2 cores, a few GB for PostgreSQL)
#: would set. The reasons are in README, *Running in production*.
PRODUCTION_SETTINGS: dict[str, str] = {
    # Memory: the hot set (accounts, open holds, recent events and entries) stays cached.
    "shared_buffers": "512MB",
    "effective_cache_size": "2GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    # WAL and checkpoints: a drain writes a lot of WAL; checkpoints come by time, spread
    # over most of the interval, not by WAL volume; 1 GB of segments is kept for reuse,
    # so that no commit waits for a new one to be created.
    "wal_buffers": "16MB",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
    "wal_compression": "on",
    # Storage: an SSD.
    "effective_io_concurrency": "200",
    "random_page_cost": "1.1",
    # Background writer: dirty buffers written ahead of the backends needing them.
    "bgwriter_delay": "50ms",
    "bgwriter_lru_maxpages": "400",
    # Vacuum keeps the hot tables small (dust_holds, dust_accounts are updated in place).
    "autovacuum": "on",
    # Connections: see README (each Procfile process's pool, plus the CLI and the bench).
    "max_connections": "100",
    # What an operator looks at when a request stalls.
    "log_checkpoints": "on",
    "log_lock_waits": "on",
    "log_autovacuum_min_duration": "0",
    "log_line_prefix": "%m [%p] %q%a ",
    # Durability: on, always (stated so that nobody reads them as an oversight).
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}

#: Settings that would make a benchmark's figures those of a server that loses commits.
DURABILITY = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (``DUST_PG_BIN`` wins)."""
    if os.environ.get("DUST_PG_BIN"):
        return Path(os.environ["DUST_PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("no initdb found: install PostgreSQL's server or set DUST_PG_BIN")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def merged_settings(overrides: Mapping[str, str] | None) -> dict[str, str]:
    settings = dict(PRODUCTION_SETTINGS)
    for name, value in (overrides or {}).items():
        if name in DURABILITY and str(value).lower() not in ("on", "true", "1", "yes"):
            raise ValueError(f"{name}={value} refused: a benchmark runs with {name} on")
        settings[name] = str(value)
    return settings


class _Runner:
    """Runs the server's programs as the ``postgres`` user when we are root."""

    def __init__(self) -> None:
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs a postgres user") from None

    def own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _demote(self) -> None:
        assert self.user is not None
        os.setgid(self.user.pw_gid)
        os.setgroups([])
        os.setuid(self.user.pw_uid)

    def run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env.get("LC_ALL", "C.UTF-8")
        if self.user is not None:
            env["HOME"] = self.user.pw_dir
        return subprocess.run(
            args,
            env=env,
            preexec_fn=self._demote if self.user is not None else None,  # noqa: PLW1509
            check=True,
            capture_output=True,
            text=True,
            **kwargs,  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def production_cluster(
    *,
    port: int | None = None,
    database: str = "dust_bench",
    settings: Mapping[str, str] | None = None,
    log: Path | None = None,
    preallocate_wal: bool = True,
) -> Iterator[str]:
    """Start a fresh cluster with ``PRODUCTION_SETTINGS`` (plus ``settings``), create
    ``database``, yield its SQLAlchemy URL; on exit stop the server and remove its folder.
    The server writes its log to ``log`` when given (it stays: a file in a folder the
    ``postgres`` user can reach, when run as root), else into that folder.

    ``preallocate_wal`` leaves ``min_wal_size`` of WAL segments ready to be reused, as on a
    server that has been running: in a new cluster every 16 MB of WAL is a new segment that
    the backend needing it fills with zeros while holding the WAL write lock, and every
    commit of every backend waits meanwhile (``IO:WALInitWrite``, ``LWLock:WALWrite``)."""
    wanted = merged_settings(settings)
    port = port or int(os.environ.get("DUST_PG_CLUSTER_PORT") or 0) or free_port()
    if not port_free(port):
        raise RuntimeError(f"port {port} is taken: pass another one")
    binaries = postgres_bin()
    runner = _Runner()
    folder = Path(tempfile.mkdtemp(prefix="dust-pg-"))
    data = folder / "data"
    server_log = log or folder / "server.log"
    runner.own(folder)
    if log is not None:
        log.touch()
        runner.own(log)
    started = False
    try:
        runner.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ]
        )
        lines = [f"{name} = '{value}'" for name, value in wanted.items()]
        lines += [
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            f"unix_socket_directories = '{folder}'",
        ]
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")
        runner.run(
            [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(server_log), "-w", "start"],
            timeout=120,
        )
        started = True
        _create_database(port, database)
        if preallocate_wal:
            _preallocate_wal(port, wanted["min_wal_size"])
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                runner.run(
                    [str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                    timeout=120,
                )
        shutil.rmtree(folder, ignore_errors=True)


def _create_database(port: int, database: str) -> None:
    import psycopg
    from psycopg import sql

    deadline = time.monotonic() + 30
    while True:
        try:
            connection = psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
            )
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _size_mb(value: str) -> int:
    units = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * factor)
    return int(value)  # plain numbers are MB for min_wal_size


def _preallocate_wal(port: int, min_wal_size: str) -> None:
    """Write ``min_wal_size`` of WAL segment by segment, then checkpoint: the segments are
    recycled (renamed, kept filled) for the WAL to come instead of being created then."""
    import psycopg

    segments = max(1, _size_mb(min_wal_size) // 16)
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        for _ in range(segments):
            connection.execute("SELECT txid_current()")  # something to switch away from
            connection.execute("SELECT pg_switch_wal()")
        connection.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--database", default="dust_bench")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another setting (repeatable); fsync/synchronous_commit/full_page_writes stay on",
    )
    parser.add_argument("--log", type=Path, help="the server's log (kept after the stop)")
    parser.add_argument(
        "--no-preallocate-wal",
        action="store_true",
        help="start with no WAL segment to reuse, as a brand new server",
    )
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with production_cluster(
        port=args.port,
        database=args.database,
        settings=overrides,
        log=args.log,
        preallocate_wal=not args.no_preallocate_wal,
    ) as url:
        print(url, flush=True)
        for name, value in merged_settings(overrides).items():
            print(f"  {name} = {value}", file=sys.stderr)
        while not stop:
            time.sleep(0.2)
    print("stopped and removed", file=sys.stderr)


if __name__ == "__main__":
    main()
