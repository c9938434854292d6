"""A scripted stand-in for a worker, for the trusted side's tests: no sandbox, no TensorFlow.

The grader's end is a real :class:`grader.engine.worker_process.WorkerProcess` on one end of
a socketpair; the other end is served by a thread that runs a *script* (a function of the
:class:`FakeWorker`), which can answer honestly or do what a hostile notebook would do to
the channel: drip a frame, flood, forge a reply. Signals go to a real helper process that
ignores SIGINT, so a test can see whether the grader interrupted and then killed.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from grader.engine.worker_process import WorkerProcess
from grader.worker import protocol

# Ignores SIGINT as a stubborn student loop would; only SIGKILL ends it.
_STUBBORN = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)"


class FakeWorker:
    """One fake worker: ``script(fake)`` runs in a thread once the hello is sent."""

    def __init__(self, script) -> None:
        grader_end, self.sock = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-c", _STUBBORN])
        pidfd = os.pidfd_open(self.proc.pid)
        socket.send_fds(self.sock, [b"P"], [pidfd])
        os.close(pidfd)
        self.channel = protocol.Channel(self.sock)
        self.channel.send({"ok": True, "hello": True, "notes": []})
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

    def __init__(self, script) -> None:
        self.script = script
        self.spawned: list[FakeWorker] = []

    def spawn(self, slot: int = 0) -> WorkerProcess:
        fake = FakeWorker(self.script)
        self.spawned.append(fake)
        return fake.client

    def close(self) -> None:
        for fake in self.spawned:
            fake.close()


def elapsed(fn) -> tuple[object, float]:
    started = time.monotonic()
    try:
        value = fn()
    except Exception as exc:  # the caller looks at what was raised
        value = exc
    return value, time.monotonic() - started
