"""A hostile worker at the wire: deadlines, frame bounds and reply schemas on the trusted side.

Fast: the worker is a scripted thread on a socketpair (tests/fakeworker.py), standing in for
student code that took over the real worker's channel. Each test names the attack it holds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
from fakeworker import FakeWorker, cell_reply, elapsed, frame_header, serve_forever

from grader.engine import replies
from grader.engine import worker_process as client
from grader.errors import WorkerFailure
from grader.worker import protocol


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(client, "GRACE_SECONDS", 0.5)


@pytest.fixture
def fakes():
    made: list[FakeWorker] = []

    def make(script) -> FakeWorker:
        fake = FakeWorker(script)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()


# --- 1. absolute deadlines -------------------------------------------------------------------


def drip(fake: FakeWorker) -> None:
    """The hang attack: promise a 1 MB frame, then send one byte every 0.3 s (for 20 s)."""
    fake.recv()
    fake.send_raw(frame_header(1_000_000))
    for _ in range(66):
        fake.send_raw(b" ")
        time.sleep(0.3)


def test_a_frame_dripped_one_byte_at_a_time_times_out_and_the_worker_is_killed(fakes):
    fake = fakes(drip)

    failure, took = elapsed(lambda: fake.client.request({"op": "run_cell", "source": ""}, 1.0))

    assert isinstance(failure, WorkerFailure)
    assert failure.kind == "timeout"
    assert "did not finish within 1 s and ignored the interrupt" in failure.message
    assert took < 1.0 + 0.5 + 1.0  # the deadline, the grace period, slack; not 20 s
    assert fake.killed()


def silent_then_reply_after(seconds: float):
    def script(fake: FakeWorker) -> None:
        fake.recv()
        time.sleep(seconds)
        fake.channel.send(cell_reply("late"))
        fake.recv()  # stays alive for the next request

    return script


def test_a_reply_completed_within_the_grace_period_keeps_the_worker(fakes):
    # The deadline passes while the worker computes; its reply (to the SIGINT, as far as the
    # grader knows) arrives within the grace period: interrupted, not killed.
    fake = fakes(silent_then_reply_after(1.2))

    failure, took = elapsed(lambda: fake.client.request({"op": "run_cell", "source": ""}, 1.0))

    assert isinstance(failure, WorkerFailure)
    assert failure.kind == "interrupted"
    assert fake.client.alive
    assert not fake.killed(wait=0.2)


def test_a_frame_cut_by_its_deadline_is_resumed_in_the_grace_period(fakes):
    def script(fake: FakeWorker) -> None:
        fake.recv()
        data = protocol.pack(cell_reply("x" * 1000))
        fake.send_raw(data[:100])
        time.sleep(1.2)  # past the 1 s deadline, within the 0.5 s grace
        fake.send_raw(data[100:])
        fake.recv()

    fake = fakes(script)

    failure, _ = elapsed(lambda: fake.client.request({"op": "run_cell", "source": ""}, 1.0))

    assert failure.kind == "interrupted"  # the frame's first bytes were not lost
    assert fake.client.alive


def test_a_frame_announcing_more_than_the_limit_is_refused_before_allocating(fakes):
    def script(fake: FakeWorker) -> None:
        fake.recv()
        fake.send_raw(frame_header(2**31))
        time.sleep(5)

    fake = fakes(script)
    tracemalloc.start()
    try:
        failure, took = elapsed(lambda: fake.client.request({"op": "ping"}, 3.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert failure.kind == "protocol"
    assert "exceeds" in failure.message
    assert took < 1.0
    assert peak < 1024 * 1024
    assert fake.killed()


# --- 2. schema-checked replies ---------------------------------------------------------------


def replying(reply):
    def script(fake: FakeWorker) -> None:
        fake.recv()
        fake.channel.send(reply)
        fake.recv()

    return script


def test_a_lone_surrogate_in_an_output_becomes_a_replacement_character(fakes):
    # print("\udc80") in a cell: JSON carries the escape, Python decodes a lone surrogate.
    fake = fakes(replying(cell_reply("bad \udc80 text")))

    reply = fake.client.request({"op": "run_cell", "source": ""}, 5.0)

    text = reply["outputs"][0]["text"]
    assert text == "bad \ufffd text"
    text.encode("utf-8")  # a file can hold it


def test_a_whole_surrogate_pair_is_kept_as_its_character():
    assert replies.clean_text("\ud83d\ude00 ok") == "\U0001f600 ok"


FORGED_CELL_REPLIES = {
    "array in an output": cell_reply(
        outputs=[{"output_type": "stream", "name": "stdout", "text": np.zeros(3)}]
    ),
    "array as display data": cell_reply(
        outputs=[{"output_type": "display_data", "data": {"text/plain": np.eye(2)}}]
    ),
    "outputs not a list": cell_reply(outputs={"a": 1}),
    "unknown output type": cell_reply(outputs=[{"output_type": "javascript", "code": "x"}]),
    "7.9 MB in one reply": cell_reply("x" * 7_900_000),
    "error name not text": cell_reply(error={"ename": 3, "evalue": "", "traceback": ""}),
    "duration not a number": cell_reply(duration="soon"),
    "infinite duration": cell_reply(duration=float("inf")),
    "shell commands as arrays": cell_reply(shell_commands=[np.ones(2)]),
    "ok missing": {"outputs": []},
}


@pytest.mark.parametrize("forged", FORGED_CELL_REPLIES.values(), ids=FORGED_CELL_REPLIES.keys())
def test_a_forged_cell_reply_is_a_protocol_failure_and_the_worker_is_killed(fakes, forged):
    fake = fakes(replying(forged))

    with pytest.raises(WorkerFailure, match=r"reply to 'run_cell' broke the protocol") as info:
        fake.client.request({"op": "run_cell", "source": ""}, 5.0)

    assert info.value.kind == "protocol"
    assert fake.killed()


@pytest.mark.parametrize(
    "op, forged",
    [
        ("has", {"ok": True, "value": np.zeros(2)}),
        ("type", {"ok": True, "value": ["list"]}),
        ("value", {"ok": True, "plain": False, "value": "not a handle"}),
        ("call", {"ok": False, "kind": "raised", "ename": np.zeros(2), "evalue": ""}),
    ],
)
def test_forged_replies_to_the_checks_requests_are_refused(fakes, op, forged):
    fake = fakes(replying(forged))

    with pytest.raises(WorkerFailure, match=rf"reply to '{op}' broke the protocol"):
        fake.client.request({"op": op}, 5.0)


def test_many_small_outputs_are_cut_with_a_note_not_refused(fakes):
    # An honest cell can display thousands of tiny outputs: the worker bounds their size only.
    outputs = [{"output_type": "display_data", "data": {"text/plain": "1"}}] * 10_000
    commands = [f"ls {i}" for i in range(1000)]
    fake = fakes(replying(cell_reply(outputs=outputs, shell_commands=commands)))

    reply = fake.client.request({"op": "run_cell", "source": ""}, 5.0)

    assert len(reply["outputs"]) == replies.MAX_OUTPUTS + 1
    assert "9500 more outputs of this cell were not kept" in reply["outputs"][-1]["text"]
    assert len(reply["shell_commands"]) == replies.MAX_SHELL_COMMANDS
    assert fake.client.alive


def test_a_value_with_lone_surrogates_comes_back_valid(fakes):
    fake = fakes(replying({"ok": True, "plain": True, "value": {"k\udc80": ["\udcff", 1]}}))

    reply = fake.client.request({"op": "value"}, 5.0)

    assert reply["value"] == {"k\ufffd": ["\ufffd", 1]}


def test_json_nested_a_million_levels_deep_is_a_protocol_error_not_a_crash(fakes):
    doc = b"[" * 1_000_000 + b"]" * 1_000_000

    def script(fake: FakeWorker) -> None:
        fake.recv()
        fake.send_raw(frame_header(len(doc)) + doc)
        fake.recv()

    fake = fakes(script)

    with pytest.raises(WorkerFailure, match="nested deeper") as info:
        fake.client.request({"op": "ping"}, 5.0)
    assert info.value.kind == "protocol"


def test_a_forged_hello_refuses_the_worker():
    mine, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfd = os.pidfd_open(proc.pid)
        socket.send_fds(theirs, [b"P"], [pidfd])
        os.close(pidfd)
        protocol.Channel(theirs).send({"ok": True, "notes": [np.zeros(2)]})
        with pytest.raises(WorkerFailure, match="the worker did not start"):
            client.WorkerProcess(mine)
        assert proc.wait(5) < 0  # killed
    finally:
        proc.kill()
        proc.wait()
        theirs.close()


def test_an_honest_cell_reply_passes_unchanged(fakes):
    honest = cell_reply(
        "hello\n",
        error={"ename": "ValueError", "evalue": "bad", "traceback": "Traceback..."},
        shell_commands=["ls /"],
        duration=0.25,
    )
    honest["outputs"].append(
        {
            "output_type": "execute_result",
            "data": {"text/plain": "3"},
            "metadata": {},
            "execution_count": 1,
        }
    )
    fake = fakes(serve_forever(lambda fake, request: honest))

    reply = fake.client.request({"op": "run_cell", "source": ""}, 5.0)

    assert json.loads(json.dumps(reply)) == honest
