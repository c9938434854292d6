"""The trusted side's handle on one running worker: requests with deadlines, and kills.

The worker's PID lives in another PID namespace, so the grader holds a *pidfd* for it
(received once, from the zygote, before student code starts) and
signals through that. A request that misses its deadline is interrupted (SIGINT) and, if the
worker does not answer within a grace period (student code can ignore SIGINT), killed.
Killing the worker, PID 1 of its namespace, takes every process it started with it.
"""

from __future__ import annotations

import select
import signal
import socket
import time

from . import memlimit
from .errors import WorkerFailure
from .worker import protocol

GRACE_SECONDS = 2.0


class WorkerProcess:
    def __init__(self, sock: socket.socket, on_close=None, guard=None) -> None:
        self.sock = sock
        self.on_close = on_close
        self.channel = protocol.Channel(sock)
        self.alive = True
        self.notes: list[str] = []
        self.pidfd = None
        self.guard = None  # memlimit: the worker's cgroup or watch
        try:
            sock.settimeout(60)
            msg, fds, _, _ = socket.recv_fds(sock, 1, 1)
            if msg != b"P" or len(fds) != 1:
                raise WorkerFailure("died", "the worker did not start")
            self.pidfd = fds[0]
            self.guard = memlimit.attach(guard, self.pidfd)  # before any student code
            hello = self._read(60)
            self.notes = [str(n) for n in hello.get("notes", [])]
            self.notes += memlimit.notes(self.guard)  # e.g. a cgroup that could not be made
        except (OSError, protocol.ProtocolError) as exc:
            self.close()
            raise WorkerFailure("died", f"the worker did not start ({exc})") from None

    # -- signals ---------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        if self.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except (ProcessLookupError, OSError):
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.alive = False

    # -- requests --------------------------------------------------------------------
    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            raise TimeoutError
        # The first byte is here; the rest of a frame must follow promptly.
        self.sock.settimeout(max(5.0, deadline - time.monotonic()))
        try:
            return self.channel.recv()
        except TimeoutError:
            raise protocol.ProtocolError("the worker stalled in the middle of a message") from None

    @memlimit.reports_memory_kills
    def request(self, message: dict, timeout: float) -> dict:
        """Send one request and return the reply, or raise :class:`WorkerFailure`."""
        if not self.alive:
            raise WorkerFailure("died", "the notebook's process is no longer running")
        try:
            self.sock.settimeout(30)
            self.channel.send(message)
            return self._read(timeout)
        except TimeoutError:
            return self._interrupt(timeout)
        except protocol.ChannelClosed:
            self.alive = False
            raise WorkerFailure("died", "the notebook's process exited or crashed") from None
        except (protocol.ProtocolError, OSError) as exc:
            self.kill()
            raise WorkerFailure("protocol", f"the worker sent an invalid reply: {exc}") from None

    def _interrupt(self, timeout: float) -> dict:
        self.signal(signal.SIGINT)
        try:
            self._read(GRACE_SECONDS)
        except (TimeoutError, protocol.ProtocolError, OSError):
            self.kill()
            raise WorkerFailure(
                "timeout", f"did not finish within {timeout:g} s and ignored the interrupt"
            ) from None
        raise WorkerFailure("interrupted", f"did not finish within {timeout:g} s")

    def close(self) -> None:
        if self.alive and self.pidfd is not None:
            try:
                self.sock.settimeout(1)
                self.channel.send({"op": "bye"})
            except (OSError, protocol.ProtocolError):
                pass
        self.signal(signal.SIGKILL)
        memlimit.release(self.guard)  # while the pidfd is still ours
        self.alive = False
        self.channel.close()
        if self.pidfd is not None:
            import os

            os.close(self.pidfd)
            self.pidfd = None
        if self.on_close:
            self.on_close()
            self.on_close = None
