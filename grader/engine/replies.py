"""What a worker's reply may look like: every reply is checked here before the grader uses it.

The wire format (:mod:`grader.worker.protocol`) already bounds a frame and decodes only plain
data. A worker runs student code, though, and student code can forge replies: the right
framing around the wrong shapes (an array where text belongs, a million outputs, a string
with lone surrogates that no UTF-8 file can hold). :func:`check` rebuilds each reply from the
fields its operation defines, with their types and sizes checked, and text made valid
Unicode. Anything else raises :class:`BadReply`; the caller treats the worker as broken.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from grader.worker.protocol import Handle, Op

MAX_TEXT = 100_000  # characters in one message field (ename, evalue, a name)
MAX_TRACEBACK = 50_000
MAX_OUTPUTS = 500  # outputs kept from one cell's reply
MAX_REPLY_OUTPUT_CHARS = 2 * 1024 * 1024  # all the outputs of one cell's reply
MAX_SHELL_COMMANDS = 100
MAX_PLAIN_ITEMS = 5_000_000  # more than 8 MiB of JSON can hold: a bound for forged data
MAX_DEPTH = 32
_OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")


class BadReply(Exception):
    """A reply that does not have the shape its operation defines."""


def clean_text(value: str, limit: int | None = None) -> str:
    """``value`` as valid Unicode: lone surrogates become U+FFFD; cut to ``limit`` chars.

    A worker may send any code point JSON can escape, including the halves of surrogate
    pairs that no UTF-8 file can hold (``print("\\udc80")`` is enough).
    """
    if limit is not None and len(value) > limit:
        value = value[:limit] + " [cut]"
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        # surrogatepass keeps pairs that are whole; a lone half becomes U+FFFD
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _text(reply: dict, key: str, limit: int = MAX_TEXT) -> str:
    value = reply.get(key, "")
    if type(value) is not str:
        raise BadReply(f"{key!r} must be text, got {type(value).__name__}")
    return clean_text(value, limit)


def _text_list(value, what: str, max_items: int, limit: int, cut: bool = False) -> list[str]:
    """A list of text; more than ``max_items`` is refused, or with ``cut`` dropped."""
    if type(value) is not list:
        raise BadReply(f"{what} must be a list, got {type(value).__name__}")
    if len(value) > max_items:
        if not cut:
            raise BadReply(f"{what} has {len(value)} items (at most {max_items})")
        value = value[:max_items]
    out = []
    for item in value:
        if type(item) is not str:
            raise BadReply(f"{what} must hold text, got {type(item).__name__}")
        out.append(clean_text(item, limit))
    return out


def _output(raw) -> tuple[dict, int]:
    """One nbformat output rebuilt from its known fields, and its size in characters."""
    if type(raw) is not dict:
        raise BadReply(f"an output must be a dict, got {type(raw).__name__}")
    kind = raw.get("output_type")
    if kind not in _OUTPUT_TYPES:
        raise BadReply(f"unknown output type {str(kind)[:40]!r}")
    if kind == "stream":
        name = raw.get("name")
        if name not in ("stdout", "stderr"):
            raise BadReply("a stream output must be stdout or stderr")
        text = _text(raw, "text", MAX_REPLY_OUTPUT_CHARS)
        return {"output_type": "stream", "name": name, "text": text}, len(text)
    if kind == "error":
        tb = _text_list(raw.get("traceback", []), "a traceback", 1000, MAX_TRACEBACK)
        ename, evalue = _text(raw, "ename"), _text(raw, "evalue")
        error = {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": tb}
        return error, len(ename) + len(evalue) + sum(len(t) for t in tb)
    data = raw.get("data")
    if type(data) is not dict:
        raise BadReply("a display output's data must be a dict")
    bundle = {}
    for mime, value in data.items():
        if type(value) is not str:
            raise BadReply(f"display data {clean_text(mime, 40)!r} must be text")
        bundle[clean_text(mime, 100)] = clean_text(value, MAX_REPLY_OUTPUT_CHARS)
    out: dict[str, object] = {"output_type": kind, "data": bundle, "metadata": {}}
    if kind == "execute_result":
        count = raw.get("execution_count")
        out["execution_count"] = count if type(count) is int and 0 <= count < 2**31 else None
    return out, sum(len(k) + len(v) for k, v in bundle.items())


def _run_cell(reply: dict) -> dict:
    outputs = reply.get("outputs", [])
    if type(outputs) is not list:
        raise BadReply("'outputs' must be a list")
    kept, size = [], 0
    for raw in outputs[:MAX_OUTPUTS]:
        out, n = _output(raw)
        size += n
        if size > MAX_REPLY_OUTPUT_CHARS:
            raise BadReply(
                f"the cell's outputs exceed {MAX_REPLY_OUTPUT_CHARS} characters; a worker "
                "keeps far less"
            )
        kept.append(out)
    if len(outputs) > MAX_OUTPUTS:
        # An honest cell can display many small outputs (the worker bounds their size, not
        # their number): keep the first ones and say so.
        note = f"[convgrade: {len(outputs) - MAX_OUTPUTS} more outputs of this cell were not kept]"
        kept.append({"output_type": "stream", "name": "stderr", "text": note + "\n"})
    error = reply.get("error")
    if error is not None:
        if type(error) is not dict:
            raise BadReply("'error' must be a dict or null")
        error = {
            "ename": _text(error, "ename", 200),
            "evalue": _text(error, "evalue", 2000),
            "traceback": _text(error, "traceback", MAX_TRACEBACK),
        }
    duration = reply.get("duration", 0.0)
    if type(duration) not in (int, float) or not math.isfinite(duration) or duration < 0:
        raise BadReply("'duration' must be a finite number of seconds")
    shell = _text_list(
        reply.get("shell_commands", []), "'shell_commands'", MAX_SHELL_COMMANDS, 500, cut=True
    )
    return {
        "ok": True,
        "outputs": kept,
        "error": error,
        "shell_commands": shell,
        "duration": float(duration),
    }


# Any: what a worker sent is known only once checked (the same value comes back, rebuilt).
def plain(value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A plain value (what :func:`protocol.decode` yields) with its text made valid.

    Raises:
        BadReply: a type that is not plain data, too deep or too many items.
    """
    if budget is None:
        budget = [MAX_PLAIN_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise BadReply(f"a value with more than {MAX_PLAIN_ITEMS} items")
    if depth > MAX_DEPTH:
        raise BadReply(f"a value nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind in (bool, int, float, np.ndarray, Handle):
        return value
    if kind is str:
        return clean_text(value)
    if kind is list:
        return [plain(v, depth + 1, budget) for v in value]
    if kind is tuple:
        return tuple(plain(v, depth + 1, budget) for v in value)
    if kind is dict:
        return {clean_text(k): plain(v, depth + 1, budget) for k, v in value.items()}
    raise BadReply(f"{kind.__name__} is not plain data")


def _failure(reply: dict) -> dict:
    kind = _text(reply, "kind", 40)
    out = {"ok": False, "kind": kind}
    for key, limit in (("name", 200), ("ename", 200), ("evalue", 2000), ("message", 2000)):
        if key in reply:
            out[key] = _text(reply, key, limit)
    if "traceback" in reply:
        out["traceback"] = _text(reply, "traceback", MAX_TRACEBACK)
    return out


def check(op: Op, reply: object) -> dict:
    """The reply to a request of operation ``op``, rebuilt from its checked fields.

    Raises:
        BadReply: the reply does not have the shape ``op`` defines.
    """
    if type(reply) is not dict:
        raise BadReply(f"a reply must be a dict, got {type(reply).__name__}")
    ok = reply.get("ok")
    if type(ok) is not bool:
        raise BadReply("'ok' must be true or false")
    if not ok:
        return _failure(reply)
    if op == "run_cell":
        return _run_cell(reply)
    if op in ("bye", "release"):
        return {"ok": True}
    value = reply.get("value")
    if op == "has":
        if type(value) is not bool:
            raise BadReply("'has' answers true or false")
        return {"ok": True, "value": value}
    if op in ("type", "ping"):
        if type(value) is not str:
            raise BadReply(f"{op!r} answers with text")
        return {"ok": True, "value": clean_text(value, 200)}
    if op in ("call", "value", "probe"):
        is_plain = reply.get("plain", True)
        if type(is_plain) is not bool:
            raise BadReply("'plain' must be true or false")
        if not is_plain:
            if type(value) is not Handle:
                raise BadReply("a value that stays in the worker must come as a handle")
            return {"ok": True, "value": value, "plain": False, "type": _text(reply, "type", 200)}
        return {"ok": True, "value": plain(value), "plain": True}
    # An operation without a schema of its own here: plain data, with its text made valid.
    return plain(reply)


def hello(reply: object) -> list[str]:
    """The notes of a worker's first message (what it could not set up)."""
    if type(reply) is not dict:
        raise BadReply("the worker's hello must be a dict")
    return _text_list(reply.get("notes", []), "the worker's notes", 50, 500)
