"""How worker processes start: forked from a warm server, or spawned fresh.

A fresh worker spends ~0.2 s starting Python and importing its HTTP client and the
transfer code before its first request, and workers could only start once
the first listing page said how many a run needs. On a big machine a tree
of a few big files is fetched in about that time. So a run that may use
processes starts one *fork server* at once, beside its own imports and
listing: it imports what a worker needs, then waits. Each worker is then a
``fork`` of it, ready in milliseconds.

The server is a fresh interpreter (``python -P -c``), never a fork of the run's
process, so the caller's threads and event loop never cross a fork: it
forks only while it has one thread, and answers "no" otherwise. Each worker
it forks is handed back as a pidfd, so the run can wait on it and kill it
though it is not its child. Linux only (pidfds); elsewhere, or when the
server cannot serve, each worker is spawned as its own interpreter.

Nothing outlives the run: the server reads its end of a socket and exits on
EOF, as each worker does with its own (see ``_worker``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

# How long a worker request may wait on the server (still importing, on a
# loaded machine) before workers are spawned instead.
FORK_TIMEOUT = 20.0
# How often the server reaps workers that exited, while it waits.
REAP_SECONDS = 1.0
# How long a run waits for the server to reap its (finished) workers and exit.
CLOSE_TIMEOUT = 2.0
# A child runs `python -P -c BOOT+MAIN PACKAGE_PARENT FD`. -P keeps the
# current directory off sys.path (``-c`` would put it first, so a
# 'selectors.py' where the tool runs, or landed there by a key with -m ., would
# run as the user). The package is loaded from where the parent loaded it by
# asking for that one name in that one folder: the folder never joins
# sys.path, so nothing else beside the package can be imported from it.
_BOOT = (
    "import importlib.machinery as _m, importlib.util as _u, sys\n"
    "_s = _m.PathFinder.find_spec('icanhazmodel', [sys.argv[1]])\n"
    "_p = _u.module_from_spec(_s); sys.modules['icanhazmodel'] = _p; _s.loader.exec_module(_p)\n"
)
_WORKER = _BOOT + "from icanhazmodel._worker import serve_on; serve_on(int(sys.argv[2]))"
_SERVER = _BOOT + "from icanhazmodel._launch import serve; serve(int(sys.argv[2]))"


class Child(Protocol):
    """A worker process, whoever's child it is."""

    @property
    def pid(self) -> int: ...

    def exit_code(self) -> int | None:
        """Its exit status once known (None: running, or gone unseen)."""

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it is gone, waiting up to *timeout* seconds (None: for good)."""

    def kill(self) -> None: ...

    def release(self) -> None:
        """Let go of what watches it (after it is gone)."""


class Spawned:
    """A worker started as its own interpreter: our child."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exit_code(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        self._proc.kill()

    def release(self) -> None:
        pass


class Forked:
    """A worker forked by the server: watched through a pidfd, which stays
    valid (and never names another process) however long it has been gone."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self._pid = pid
        self._pidfd = pidfd

    @property
    def pid(self) -> int:
        return self._pid

    def exit_code(self) -> int | None:
        return None  # the server reaps it, and only a parent learns the status

    def wait(self, timeout: float | None = None) -> bool:
        if self._pidfd < 0:
            return True
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(ready)

    def kill(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def release(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def _child_env() -> dict[str, str]:
    """The environment, with PYTHONPATH's entries made absolute and those
    naming the current directory itself ('', '.') left out."""
    env = dict(os.environ)
    if "PYTHONPATH" in env:
        here = os.path.realpath(os.getcwd())
        entries = [os.path.realpath(e) for e in env["PYTHONPATH"].split(os.pathsep) if e]
        env["PYTHONPATH"] = os.pathsep.join(e for e in entries if e != here)
    return env


def _python(code: str, fd: int) -> subprocess.Popen[bytes]:
    package_parent = str(Path(__file__).resolve().parent.parent)
    return subprocess.Popen(
        [sys.executable, "-P", "-c", code, package_parent, str(fd)],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        env=_child_env(),
        # Out of the terminal's process group: a Ctrl-C while it is still
        # starting (before it can ignore SIGINT) would print a traceback.
        # The run stops its workers itself, by message.
        process_group=0,
    )


class ForkServer:
    """The run's side of the fork server (see the module's docstring)."""

    def __init__(self, proc: subprocess.Popen[bytes], control: socket.socket) -> None:
        self._proc = proc
        self._control = control
        self._broken = False
        self._forked = 0
        self._closed = False

    @classmethod
    def available(cls) -> bool:
        return hasattr(os, "fork") and hasattr(os, "pidfd_open")

    @classmethod
    def start(cls) -> ForkServer | None:
        """Start the server; it imports in the background (None: unavailable here)."""
        if not cls.available():
            return None
        ours, theirs = socket.socketpair()
        with theirs:
            try:
                proc = _python(_SERVER, theirs.fileno())
            except OSError:
                ours.close()
                return None
        ours.settimeout(FORK_TIMEOUT)
        return cls(proc, ours)

    def fork(self, fd: int) -> Forked | None:
        """A worker on socket *fd*, or None if the server cannot make one."""
        if self._broken:
            return None
        try:
            socket.send_fds(self._control, [b"w"], [fd])
            message, fds, _, _ = socket.recv_fds(self._control, 32, 1)
        except OSError:  # a timeout too: it is stuck; spawn from now on
            message, fds = b"", []
        if not fds:
            self._broken = True
            return None
        self._forked += 1
        return Forked(int(message), fds[0])

    def close(self) -> None:
        """Stop the server once its workers are gone. It reaps them first, so
        their CPU time counts in ours, as a spawned worker's does (``time``
        and the bench's cores-used figure read it)."""
        if self._closed:
            return
        self._closed = True
        self._control.close()
        if self._forked:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(CLOSE_TIMEOUT)
        if self._proc.poll() is None:  # still importing, or stuck: nothing to reap
            self._proc.kill()
            self._proc.wait()


def launch(count: int, settings: Any, server: ForkServer | None) -> list[tuple[Child, Connection]]:
    """Start *count* workers, each sent *settings* first: forked when the
    server can, spawned otherwise."""
    started: list[tuple[Child, Connection]] = []
    try:
        for _ in range(count):
            forked = _fork(server) if server is not None else None
            child, conn = forked or _spawn()
            started.append((child, conn))
            conn.send(settings)
    except BaseException:
        for child, conn in started:
            conn.close()  # it reads EOF and exits
            child.kill()
        raise
    return started


def _fork(server: ForkServer) -> tuple[Child, Connection] | None:
    ours, theirs = socket.socketpair()
    with theirs:
        child = server.fork(theirs.fileno())
    if child is None:
        # Never reused for a spawned worker: a server that failed halfway
        # may have forked a reader of it, which now sees EOF and exits.
        ours.close()
        return None
    return child, _connection(ours)


def _spawn() -> tuple[Child, Connection]:
    ours, theirs = socket.socketpair()
    with theirs:
        child = Spawned(_python(_WORKER, theirs.fileno()))
    return child, _connection(ours)


# -- the server process --------------------------------------------------------------


def serve(fd: int) -> None:
    """The fork server's main, on socket *fd* (see ``_python``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides when its workers stop
    control = socket.socket(fileno=fd)
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel without pidfds (before 5.3): the run spawns workers
        return
    from . import _checksums, _worker  # the point of the server: a worker's imports, paid once

    while True:
        ready, _, _ = select.select([control], [], [], REAP_SECONDS)
        _reap()
        if not ready:
            continue
        try:
            _, fds, _, _ = socket.recv_fds(control, 32, 1)
        except OSError:
            return
        if not fds:  # the run closed its end, or died
            _reap(block=True)
            os._exit(0)  # no interpreter teardown: the run waits for this
        # Loaded once before the first fork, not at the start: most runs that
        # start a server never ask it for a worker. It starts no thread, so
        # forking stays allowed.
        _checksums.preload_crt()
        try:
            pid = _fork_worker(control, fds[0], _worker.serve_on)
        finally:
            os.close(fds[0])  # only the worker holds it, so its death is seen
        if pid is None:
            control.send(b"0")  # refused: the run spawns instead
            continue
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(control, [str(pid).encode()], [pidfd])
        finally:
            os.close(pidfd)


def _fork_worker(control: socket.socket, fd: int, main: Callable[[int], None]) -> int | None:
    if len(os.listdir("/proc/self/task")) != 1:
        return None  # a thread (a library's, at import) could hold a lock forever in the child
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        control.close()
        main(fd)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # never back into the server's loop


def _reap(*, block: bool = False) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, 0 if block else os.WNOHANG)[0]:
            pass


def _connection(ours: socket.socket) -> Connection:
    # Imported here: starting the fork server, the first thing a run does,
    # needs none of multiprocessing (~8 ms of imports).
    from multiprocessing.connection import Connection

    return Connection(ours.detach())
