"""A scripted stand-in for a worker, for the trusted side's tests: no sandbox, no TensorFlow.

The grader's end is a real :class:`grader.engine.worker_process.WorkerProcess` on one end of
a socketpair; the other end is served by a thread that runs a *script* (a function of the
:class:`FakeWorker`), which can answer honestly or do what a hostile notebook would do to
the channel: drip a frame, flood, forge a reply. Signals go to a real helper process that
ignores SIGINT, so a test can see whether the grader interrupted and then killed.

:func:`real_worker` is the other kind of script: the worker's real request loop
(:class:`grader.worker.serve.Server`) and IPython executor, in this process, with cues that
make a cell die or hang. :class:`TensorFlowHidden` proves such a test imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from grader.engine.notebook import Cell
from grader.engine.worker_process import WorkerProcess
from grader.worker import protocol
from grader.worker.serve import Server

# Ignores SIGINT as a stubborn student loop would; only SIGKILL ends it, or the end of the
# process that started it (a grading process a test makes die must not leave it behind).
_STUBBORN = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "parent = int(sys.argv[1])  # it may have died already\n"
    "for _ in range(3000):\n"
    "    if os.getppid() != parent:\n"
    "        break\n"
    "    time.sleep(0.2)\n"
)


class FakeWorker:
    """One fake worker: ``script(fake)`` runs in a thread once the hello is sent."""

    def __init__(self, script, notes: tuple[str, ...] = ()) -> None:
        grader_end, self.sock = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-c", _STUBBORN, str(os.getpid())])
        pidfd = os.pidfd_open(self.proc.pid)
        socket.send_fds(self.sock, [b"P"], [pidfd])
        os.close(pidfd)
        self.channel = protocol.Channel(self.sock)
        self.channel.send({"ok": True, "hello": True, "notes": list(notes)})
        self.requests: list[dict] = []
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()
        self.client = WorkerProcess(grader_end)

    def _run(self, script) -> None:
        try:
            script(self)
        except (OSError, protocol.ProtocolError):
            pass  # the grader closed its end: the "worker" is gone

    def recv(self) -> dict:
        request = self.channel.recv()
        self.requests.append(request)
        return request

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def killed(self, wait: float = 2.0) -> bool:
        """True when the helper process died of SIGKILL."""
        try:
            return self.proc.wait(wait) == -signal.SIGKILL
        except subprocess.TimeoutExpired:
            return False

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sock.close()


def frame_header(json_len: int, n_blobs: int = 0) -> bytes:
    return struct.pack("!II", json_len, n_blobs)


def cell_reply(text: str = "", **extra) -> dict:
    """What an honest worker answers to run_cell."""
    outputs = [{"output_type": "stream", "name": "stdout", "text": text}] if text else []
    reply = {"ok": True, "outputs": outputs, "error": None, "shell_commands": [], "duration": 0.0}
    reply.update(extra)
    return reply


def serve_forever(answer):
    """A script: answer every request with ``answer(fake, request)`` (None: no reply)."""

    def script(fake: FakeWorker) -> None:
        while True:
            request = fake.recv()
            if request.get("op") == "bye":
                return
            reply = answer(fake, request)
            if reply is not None:
                fake.channel.send(reply)

    return script


class FakeLauncher:
    """Spawns a fresh :class:`FakeWorker` running ``script`` for every (re)start."""

    def __init__(self, script, notes: tuple[str, ...] = ()) -> None:
        self.script = script
        self.notes = notes  # what each worker's hello says it could not set up
        self.spawned: list[FakeWorker] = []

    def spawn(self, slot: int = 0) -> WorkerProcess:
        fake = FakeWorker(self.script, self.notes)
        self.spawned.append(fake)
        return fake.client

    def close(self) -> None:
        for fake in self.spawned:
            fake.close()


def cells(*sources: str) -> tuple[Cell, ...]:
    """A notebook's code cells, numbered from 0."""
    return tuple(Cell(i, s) for i, s in enumerate(sources))


def sources_run(fake: FakeWorker) -> list[str]:
    """The cells one worker was asked to run, in order (first runs and replays alike)."""
    return [r["source"] for r in fake.requests if r.get("op") == "run_cell"]


def elapsed(fn) -> tuple[object, float]:
    started = time.monotonic()
    try:
        value = fn()
    except Exception as exc:  # the caller looks at what was raised
        value = exc
    return value, time.monotonic() - started


# -- the real worker loop, in this process ------------------------------------------------------


class CuedServer(Server):
    """The worker's real request loop and executor, with cells that die or hang on cue.

    ``cues`` maps a cell's source to what the worker does instead of running it: ``"die"``
    (its channel closes, as when the process exits), ``"hang"`` (no reply until the grader
    closes the channel, as a loop that ignores SIGINT) or ``"exit"`` (the whole process ends
    at once: with workers in the grading process, that grading process dies, as when the
    kernel's OOM killer picks it). Every other cell runs in IPython.
    """

    def __init__(self, channel: protocol.Channel, cues: dict[str, str]) -> None:
        super().__init__(channel)
        self.cues = cues

    def op_run_cell(self, req):
        cue = self.cues.get(str(req["source"]))
        if cue == "exit":
            os._exit(70)
        if cue == "hang":
            # Readable once the grader closes its end (EOF); a bound keeps a leak short.
            select.select([self.channel.sock], [], [], 30)
        if cue in ("die", "hang"):
            # The reply the loop then tries to send fails (OSError): the serve loop ends.
            self.channel.sock.shutdown(socket.SHUT_RDWR)
            self.channel.sock.close()
            return {"ok": True}
        return super().op_run_cell(req)


class _Recorded(protocol.Channel):
    """The worker's channel, keeping each request it reads (for :func:`sources_run`)."""

    def __init__(self, sock: socket.socket, log: list[dict]) -> None:
        super().__init__(sock)
        self.log = log

    def recv(self, deadline: float | None = None) -> dict:
        request = super().recv(deadline)
        self.log.append(request)
        return request


def real_worker(cues: dict[str, str] | None = None):
    """A script: a fresh IPython shell served by :class:`CuedServer`, for each (re)start.

    The cells run in the test's own process: only a test's own cells belong there. What a
    setup request configures (:func:`grader.worker.imports.configure`) stays set in this
    process; a test that sends packages resets it.
    """

    def script(fake: FakeWorker) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        # A restarted worker must not see its predecessor's names: IPython's shell is a
        # process-wide singleton, so the next one is built from scratch.
        InteractiveShell.clear_instance()
        CuedServer(_Recorded(fake.sock, fake.requests), dict(cues or {})).serve()

    return script


_TF_ROOTS = ("tensorflow", "keras", "tf_keras")


class TensorFlowHidden:
    """Within ``with``: TensorFlow and Keras are absent, and any import of them is recorded.

    Other tests of the same run may have imported them already; those modules are taken out
    of ``sys.modules`` (so ``sys.modules.get("tensorflow")`` is None, as in a fresh worker)
    and put back afterwards.
    """

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._saved: dict[str, object] = {}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _TF_ROOTS:
            self.attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None

    def __enter__(self) -> TensorFlowHidden:
        for name in [n for n in sys.modules if n.split(".")[0] in _TF_ROOTS]:
            self._saved[name] = sys.modules.pop(name)
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc) -> None:
        sys.meta_path.remove(self)
        for name, module in self._saved.items():
            sys.modules.setdefault(name, module)


class InProcessLauncher(FakeLauncher):
    """What a batch needs of a launcher, spawning :func:`real_worker` workers in this process."""

    warm = False  # no zygote: the batch grades in this process, one submission at a time
    channels = 1

    def __init__(self, cues: dict[str, str] | None = None) -> None:
        from grader.sandbox.launcher import Isolation

        super().__init__(real_worker(cues))
        self.isolation = Isolation(sandboxed=False, notes=("in-process workers for tests",))

    def start(self, wait: bool = True) -> None:
        pass


class ForkingLauncher(InProcessLauncher):
    """A warm launcher with ``channels`` channels, so a batch with ``jobs`` > 1 forks that
    many grading processes; each one's workers then run in that process (:func:`real_worker`).

    What the grading processes do stays in them; so each start of one (``in_child``) and each
    worker one spawns is appended to the file ``log`` as a line ``"in_child <channel> <pid>"``
    or ``"spawn <slot> <pid>"``, which the test reads with :meth:`events`.
    """

    warm = True

    def __init__(self, log: Path, cues: dict[str, str] | None = None, channels: int = 2) -> None:
        super().__init__(cues)
        self.log = log
        self.channels = channels
        self.starts = 0

    def start(self, wait: bool = True) -> None:
        self.starts += 1

    def in_child(self, channel: int) -> None:
        self._note("in_child", channel)  # a channel it does not have too: the test sees it
        if channel >= self.channels:
            raise ValueError(f"channel {channel} >= channels={self.channels}")
        self.spawned = []  # the workers the parent spawned are the parent's to close

    def spawn(self, slot: int = 0) -> WorkerProcess:
        self._note("spawn", slot)
        return super().spawn(slot)

    def _note(self, what: str, number: int) -> None:
        with open(self.log, "a") as fh:  # one short append: the processes' lines never mix
            fh.write(f"{what} {number} {os.getpid()}\n")

    def events(self) -> list[tuple[str, int, int]]:
        """Every logged ``(what, channel or slot, pid)``, in the order they were written."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [(what, int(n), int(pid)) for what, n, pid in (line.split() for line in lines)]


@contextlib.contextmanager
def deadline(seconds: float):
    """Within ``with``: a hang fails the test after ``seconds`` (SIGALRM; main thread only)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
