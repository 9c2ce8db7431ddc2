"""A throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks.

``PostgresServer().start()`` finds Debian's server binaries (installing the ``postgresql``
package with ``apt-get`` when they are missing and this process is root), runs ``initdb``
on a temporary folder, starts ``postgres`` on a free port of 127.0.0.1 with trust
authentication and its unix socket inside that folder, and creates one database.
``uri()`` is its address (``postgresql://postgres@127.0.0.1:PORT/mlflow``). ``stop()``
stops it (``pg_ctl stop -m fast``) and keeps the data, so ``start()`` brings it back;
``close()`` also removes a folder the server created; ``with PostgresServer() as server:``
does both.

``initdb`` and ``pg_ctl`` refuse to run as root: as root, they run as the ``postgres``
system user (which the Debian package creates) through ``runuser``, and the folder is
handed to that user.

It is a test server: trust authentication lets any local user connect as the superuser,
so run it only on a machine of your own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tracelet.testing.debian import apt_install, can_install
from tracelet.testing.servers import ServerProcess

__all__ = ["PostgresServer", "postgres_binaries"]

SERVER_TOOLS = ("initdb", "pg_ctl", "postgres", "createdb")
"""The programs the helper runs, all from one PostgreSQL installation."""

SYSTEM_USER = "postgres"
"""The system user that runs the server when this process is root."""


def _binary_folder() -> Path | None:
    """The folder holding every program of :data:`SERVER_TOOLS`, or None."""
    candidates = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda path: [int(n) for n in re.findall(r"\d+", path)], reverse=True)
    candidates += [Path(path) for path in versions]
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in SERVER_TOOLS):
            return folder
    return None


def _install() -> None:
    """Install Debian's ``postgresql`` package (refreshing the package lists if needed)."""
    if not can_install():
        raise RuntimeError(
            "PostgreSQL's server programs (initdb, pg_ctl, postgres) are not installed, and "
            "this process cannot install them (it needs root and apt-get). Install them "
            "with: sudo apt-get install --no-install-recommends postgresql"
        )
    apt_install("postgresql")


def postgres_binaries(install: bool = True) -> Path:
    """The folder of PostgreSQL's server programs: on ``PATH`` or under
    ``/usr/lib/postgresql/*/bin`` (newest version first). When they are missing and
    ``install`` is true, Debian's ``postgresql`` package is installed first (as root)."""
    folder = _binary_folder()
    if folder is None and install:
        _install()
        folder = _binary_folder()
    if folder is None:
        raise RuntimeError(
            f"no PostgreSQL installation with {', '.join(SERVER_TOOLS)} was found on PATH "
            "or under /usr/lib/postgresql/*/bin"
        )
    return folder


class PostgresServer(ServerProcess):
    """One ``postgres`` server on ``127.0.0.1:port``, superuser ``postgres`` with trust
    authentication, and a database named ``database``.

    ``root`` holds ``data/``, the unix socket folder ``socket/`` and ``server.log``; by
    default it is a new temporary folder, removed by :meth:`close`. As root, the server
    runs as the ``postgres`` user, who must be able to reach ``root``.
    """

    name = "PostgreSQL"

    def __init__(self, root: Path | None = None, database: str = "mlflow") -> None:
        self._owns_root = root is None
        super().__init__(
            Path(tempfile.mkdtemp(prefix="tracelet-postgres-")) if root is None else root
        )
        self.database = database
        """The database created at first start."""
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.binaries: Path | None = None

    def uri(self, scheme: str = "postgresql", database: str | None = None) -> str:
        """The server's address, e.g. ``uri("postgresql+psycopg2")`` for SQLAlchemy."""
        return f"{scheme}://{SYSTEM_USER}@127.0.0.1:{self.port}/{database or self.database}"

    def command(self) -> list[str]:
        """``pg_ctl start`` on ``data/`` (it returns once the server accepts connections)."""
        assert self.binaries is not None
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {shlex.quote(str(self.socket_dir))}"
            " -c fsync=off -c full_page_writes=off"  # throwaway data: no need to survive a crash
        )
        return [
            *self._as_server_user(),
            str(self.binaries / "pg_ctl"),
            "start",
            "--wait",
            "--timeout=60",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
        ]

    def healthy(self) -> bool:
        """Whether the server accepts TCP connections on its port now."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def start(self, timeout: float = 90.0) -> None:
        """Initialise the data folder (first start only), start the server, and create the
        database; raises ``RuntimeError`` with the server log's tail if it cannot start."""
        self.binaries = postgres_binaries()
        if self.running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._hand_to_server_user()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [
                    *self._as_server_user(),
                    str(self.binaries / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    SYSTEM_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                "initdb",
                timeout,
            )
        self._run(self.command(), "pg_ctl start", timeout)
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not listen in {timeout}s\n{self.log_tail()}")
            time.sleep(0.1)
        self._run(
            [
                str(self.binaries / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SYSTEM_USER,
                self.database,
            ],
            "createdb",
            timeout,
            tolerate="already exists",  # a restart
        )

    def running(self) -> bool:
        """Whether a server process of this data folder is alive."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``, ``-m immediate`` if that fails); the
        data stay for the next :meth:`start`."""
        if self.binaries is None or not self.running():
            return
        for mode in ("fast", "immediate"):
            result = subprocess.run(
                [
                    *self._as_server_user(),
                    str(self.binaries / "pg_ctl"),
                    "stop",
                    "--wait",
                    "--timeout=30",
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                ],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
            if result.returncode == 0 or not self.running():
                return
        raise RuntimeError(f"{self.name} did not stop: {result.stderr}\n{self.log_tail()}")

    def close(self) -> None:
        """Stop the server and remove its folder if it created it."""
        self.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:  # (a server started before a later step failed)
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _as_server_user(self) -> list[str]:
        return ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []

    def _hand_to_server_user(self) -> None:
        """As root, give ``root`` to the ``postgres`` user, and check that it can reach it."""
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root, {self.name} needs the system user {SYSTEM_USER!r}, which "
                "Debian's postgresql package creates; it does not exist"
            ) from None
        for path in (self.root, self.socket_dir, self.root / "server.log"):
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, user.pw_uid, user.pw_gid)
        reachable = subprocess.run(
            [*self._as_server_user(), "test", "-w", str(self.root), "-a", "-x", str(self.root)]
        )
        if reachable.returncode != 0:
            raise RuntimeError(
                f"the {SYSTEM_USER!r} user cannot reach {self.root} (a parent folder is "
                "closed to it); give PostgresServer a folder under /tmp, or none"
            )

    def _run(self, command: list[str], what: str, timeout: float, tolerate: str = "") -> None:
        """Run ``command``; raise with its output and the log's tail if it fails (unless
        its output contains ``tolerate``)."""
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.root,  # a folder the server user can reach, whatever ours is
        )
        if result.returncode != 0 and not (tolerate and tolerate in result.stderr):
            raise RuntimeError(
                f"{self.name}: {what} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()[-2000:]}\n"
                f"server log ({self.root / 'server.log'}):\n{self.log_tail()}"
            )
