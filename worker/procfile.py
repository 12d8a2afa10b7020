"""The Procfile's processes, started and stopped as a process manager does, and the check
that the servers they need answer.

One harness for everything that runs Dust's processes: ``dust demo``, the end-to-end
tests, the benchmarks and the fault harness. A process is a real ``celery`` command in a
process group of its own (its pool children go with it), its output appended to a log
file; it is ready when its log says so (``<node>@<host> ready.`` for a worker, the
scheduler's banner for ``beat``); it stops with SIGTERM (a warm shutdown: running tasks
finish, delivered messages go back) and then SIGKILL for whatever is left of the group,
or dies at once with :meth:`Process.kill_hard` (a machine crash).

The Procfile's names: ``worker`` (events and scheduled jobs), ``requests`` (checkout and
admin requests, on a pool of their own) and ``beat`` (the scheduler).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

#: The Procfile beside the packages, as in a checkout.
PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
#: Whatever a worker's log says once it consumes (Celery's ``<node> ready.``).
WORKER_READY = " ready."
#: The scheduler's first line once it runs.
BEAT_READY = "beat: Starting..."


class ProcessFailed(RuntimeError):
    """A process exited, or did not become ready in time; the message has its log's tail."""


def read(path: Path = PROCFILE) -> dict[str, list[str]]:
    """The Procfile's processes: name -> command words, in the file's order."""
    processes: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        processes[name.strip()] = shlex.split(command)
    return processes


def command(name: str, *extra: str, path: Path = PROCFILE) -> list[str]:
    """The Procfile's command for ``name``, run with this Python (``celery`` becomes
    ``python -m celery``, the interpreter of this virtualenv), plus ``extra`` arguments."""
    processes = read(path)
    if name not in processes:
        raise KeyError(f"no {name}: line in {path}")
    words = processes[name]
    if words[0] != "celery":
        raise ValueError(f"unexpected Procfile line for {name}: {shlex.join(words)}")
    return [sys.executable, "-m", "celery", *words[1:], *extra]


def worker_command(queues: Sequence[str], *extra: str) -> list[str]:
    """A worker on ``queues`` started as the Procfile's workers are (for a test that
    needs another set of queues in one process)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dust.worker.app",
        "worker",
        "--queues",
        ",".join(queues),
        "--loglevel",
        "INFO",
        *extra,
    ]


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (a worker's pool processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces, so split after the ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


class Process:
    """One process of the Procfile (or one started like them), in its own process group.

    ``ready`` is the text its log shows once it works (:data:`WORKER_READY` by default);
    ``env`` replaces the environment whole when given; ``cwd`` is where it runs (the
    embedded broker and database live under it)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: str = WORKER_READY,
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_marker = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_offset = 0

    # -- running --------------------------------------------------------------------

    def start(self) -> Process:
        if self.running():
            raise ProcessFailed(f"{self.name} already running")
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} of {self.name} =====\n".encode())
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60) -> Process:
        """Until this start's log shows the ready line; ProcessFailed if the process
        exits first or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if any(
                self.ready_marker in line for line in self.log_since(self.log_offset).splitlines()
            ):
                return self
            if not self.running():
                raise ProcessFailed(f"{self.name} exited at start-up:\n{self.log(40)}")
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{self.name} not ready after {timeout:.0f}s:\n{self.log(40)}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProcessFailed(f"{self.name} was never started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """ProcessFailed if the process has stopped on its own."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessFailed(f"the {self.name} stopped:\n{self.log(15)}")

    def children(self) -> list[int]:
        return child_pids(self.pid) if self.running() else []

    # -- stopping -------------------------------------------------------------------

    def terminate(self) -> None:
        """SIGTERM (a warm shutdown), without waiting."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left of the group."""
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._kill_group()

    def kill_hard(self) -> None:
        """SIGKILL the whole process group (main process and pool) at once."""
        if self.proc is None:
            return
        self._kill_group()

    def kill_main(self, pause: float = 0.2) -> None:
        """SIGKILL of the main process, then of its orphaned pool (a machine crash)."""
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        time.sleep(pause)
        self._kill_group()

    def _kill_group(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- its log --------------------------------------------------------------------

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        try:
            return self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log(self, last_lines: int = 300) -> str:
        try:
            lines = self.log_path.read_text("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-last_lines:])


def start_all(processes: Sequence[Process], timeout: float = 60) -> None:
    """Start every process, then wait until each is ready (they start side by side)."""
    for process in processes:
        process.start()
    for process in processes:
        process.wait_ready(timeout)


def stop_all(processes: Sequence[Process], timeout: float = 30) -> None:
    """Warm shutdown of every process at once, then each is waited for (and killed)."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop(timeout)


# -- the servers --------------------------------------------------------------------------


def unreachable(
    database_url: str | None = None,
    broker_url: str | None = None,
    *,
    timeout: float = 3,
    first_line: bool = False,
) -> str | None:
    """Why the PostgreSQL server of ``database_url`` (its ``postgres`` database) or the
    Redis of ``broker_url`` cannot be used, or None when both answer. ``None`` URLs are
    not checked; Redis databases 0 and 15 are refused (they are not for tests)."""
    problems = []
    if broker_url is not None:
        if urlsplit(broker_url).path.strip("/") in ("", "0", "15"):
            return f"refusing to use Redis database of {broker_url} (0 and 15 are not for tests)"
    if database_url is not None:
        problems.extend(_check("PostgreSQL", database_url, _postgres, timeout, first_line))
    if broker_url is not None:
        problems.extend(_check("Redis", broker_url, _redis, timeout, first_line))
    return "; ".join(problems) or None


def _check(
    what: str, url: str, probe: Callable[[str, float], Any], timeout: float, first_line: bool
) -> list[str]:
    try:
        probe(url, timeout)
    except Exception as exc:  # any failure to connect means "not available"
        detail = str(exc).splitlines()[0] if first_line and str(exc) else str(exc)
        return [f"{what} ({_safe(url)}): {type(exc).__name__}: {detail}".strip()]
    return []


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _postgres(url: str, timeout: float) -> None:
    engine = create_engine(
        make_url(url).set(database="postgres"), connect_args={"connect_timeout": int(timeout)}
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def _redis(url: str, timeout: float) -> None:
    redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
