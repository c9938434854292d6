"""The trusted side's handle on one running worker: requests with deadlines, and kills.

The worker's PID lives in another PID namespace, so the grader holds a *pidfd* for it
(received once, from the zygote, before student code starts) and
signals through that. Every request has one absolute deadline that covers sending it and
receiving the whole reply frame: a worker that sends its reply one byte at a time cannot
stretch it. A request that misses its deadline is interrupted (SIGINT) and, if the worker
does not finish a reply within a grace period (student code can ignore SIGINT), killed.
Killing the worker, PID 1 of its namespace, takes every process it started with it.

Every reply is checked against its operation's schema (:mod:`grader.engine.replies`) before anyone
uses it; a reply that breaks it means student code forged it, and the worker is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import cast

from grader.engine import replies
from grader.errors import WorkerFailure
from grader.sandbox import memlimit
from grader.worker import protocol

GRACE_SECONDS = 2.0
HELLO_SECONDS = 60.0


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
            sock.settimeout(HELLO_SECONDS)
            msg, fds, _, _ = socket.recv_fds(sock, 1, 1)
            if msg != b"P" or len(fds) != 1:
                raise WorkerFailure("died", "the worker did not start")
            self.pidfd = fds[0]
            self.guard = memlimit.attach(guard, self.pidfd)  # before any student code
            hello = self.channel.recv(time.monotonic() + HELLO_SECONDS)
            self.notes = replies.hello(hello)
            self.notes += memlimit.notes(self.guard)  # e.g. a cgroup that could not be made
        except (OSError, protocol.ProtocolError, replies.BadReply) as exc:
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
    def _send(self, message: dict, deadline: float) -> None:
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            self.channel.send(message)
        except TimeoutError:
            # Part of the request may be in the socket: the stream cannot be trusted again.
            self.kill()
            raise WorkerFailure(
                "timeout", "did not take the grader's request in time and was stopped"
            ) from None

    @memlimit.reports_memory_kills
    def request(self, message: dict, timeout: float) -> dict:
        """Send one request and return its checked reply, or raise :class:`WorkerFailure`.

        ``timeout`` bounds the whole exchange: sending the request and receiving every byte
        of the reply.
        """
        if not self.alive:
            raise WorkerFailure("died", "the notebook's process is no longer running")
        op = cast(protocol.Op, message.get("op"))  # made by protocol.request
        deadline = time.monotonic() + timeout
        try:
            self._send(message, deadline)
            reply = self.channel.recv(deadline)
        except TimeoutError:
            reply = self._interrupt(timeout)
        except protocol.ChannelClosed:
            self.alive = False
            raise WorkerFailure("died", "the notebook's process exited or crashed") from None
        except (protocol.ProtocolError, OSError) as exc:
            self.kill()
            raise WorkerFailure("protocol", f"the worker sent an invalid reply: {exc}") from None
        try:
            return replies.check(op, reply)
        except replies.BadReply as exc:
            self.kill()
            raise WorkerFailure(
                "protocol",
                f"the worker's reply to {op!r} broke the protocol ({exc}); its process was "
                "stopped. Does the notebook change the grader's worker code?",
            ) from None

    def _interrupt(self, timeout: float) -> dict:
        """The deadline passed: SIGINT, then the rest of a reply within the grace period."""
        self.signal(signal.SIGINT)
        try:
            # Resumes a frame that was cut off by the deadline, if there is one.
            self.channel.recv(time.monotonic() + GRACE_SECONDS)
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
                self.channel.send(protocol.request("bye"))
            except (OSError, protocol.ProtocolError):
                pass
        self.signal(signal.SIGKILL)
        memlimit.release(self.guard)  # while the pidfd is still ours
        self.alive = False
        self.channel.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.on_close:
            self.on_close()
            self.on_close = None
