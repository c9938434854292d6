"""The ``student`` fixture's objects: trusted stand-ins for things that live in the worker.

Attribute access builds a path locally; only calls and value fetches cross the process
boundary. What comes back is plain data decoded by :mod:`grader.worker.protocol` (fresh
numpy arrays and Python builtins), or a handle wrapped in another :class:`Remote`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from grader.errors import WorkerFailure
from grader.worker import protocol
from grader.worker.protocol import Handle

MAX_ARG_PREVIEW = 40


class CheckFailure(AssertionError):
    """A check failed for a reason the student should read as is."""


class MissingName(CheckFailure):
    pass


class StudentCodeRaised(CheckFailure):
    def __init__(self, message: str, ename: str, evalue: str) -> None:
        super().__init__(message)
        self.ename = ename
        self.evalue = evalue


class NotPlainData(CheckFailure):
    pass


class WorkerGone(CheckFailure):
    pass


def _describe(path: list[str]) -> str:
    return ".".join(path) if path else "object"


class Remote:
    """A name or attribute path in the student's notebook (or on an object there)."""

    __slots__ = ("_student", "_base", "_path", "_generation", "_label")
    _student: Student
    _base: Handle | None
    _path: list[str]
    _generation: int
    _label: str

    def __init__(self, student, base: Handle | None, path: list[str], generation: int, label: str):
        object.__setattr__(self, "_student", student)
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_generation", generation)
        object.__setattr__(self, "_label", label)

    def __getattr__(self, name: str) -> Remote:
        if name.startswith("__"):
            raise AttributeError(name)
        return Remote(
            self._student,
            self._base,
            self._path + [name],
            self._generation,
            f"{self._label}.{name}",
        )

    def __setattr__(self, name, value):
        raise AttributeError("student objects cannot be modified from a check; call a method")

    def __call__(self, *args, **kwargs):
        return self._student._call(self, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        value = self._student.value(self)
        arr = np.asarray(value)
        return arr.astype(dtype) if dtype is not None else arr

    def __repr__(self) -> str:
        return f"<student object {self._label}>"

    def _target(self) -> dict:
        return {"base": self._base, "path": list(self._path)}


class Student:
    """What checks receive as the ``student`` fixture. See docs/checks-api.md."""

    def __init__(self, session) -> None:
        self._session = session
        self.probe = _Probes(self)

    def __getattr__(self, name: str) -> Remote:
        if name.startswith("_"):
            raise AttributeError(name)
        return Remote(self, None, [name], self._session.generation, name)

    # -- public helpers --------------------------------------------------------------------
    def has(self, name: str) -> bool:
        reply = self._request(protocol.request("has", name=name), name)
        return bool(reply.get("value"))

    def value(self, ref: Remote):
        reply = self._request(
            protocol.request("value", target=self._target_of(ref), want="value"), ref._label
        )
        return reply["value"]

    def code_cells(self) -> tuple[str, ...]:
        """The source of each code cell of the submitted notebook, in order.

        Read from the submission by the grader, never from the worker: a check may trust it
        as what the student wrote (not as what ran).
        """
        return tuple(str(c.source) for c in getattr(self._session, "cells", ()))

    def type_name(self, ref: Remote) -> str:
        reply = self._request(protocol.request("type", target=self._target_of(ref)), ref._label)
        return str(reply["value"])

    # -- plumbing -------------------------------------------------------------------------
    def _target_of(self, ref: Remote) -> dict:
        if ref._base is not None and ref._generation != self._session.generation:
            raise WorkerGone(
                f"`{ref._label}` no longer exists: the notebook's process was restarted "
                "after an earlier failure."
            )
        return ref._target()

    def _encode_arg(self, value):
        if isinstance(value, Remote):
            reply = self._request(
                protocol.request("value", target=self._target_of(value), want="handle"),
                value._label,
            )
            return reply["value"]
        if isinstance(value, (list, tuple)):
            items = [self._encode_arg(v) for v in value]
            return items if isinstance(value, list) else tuple(items)
        if isinstance(value, dict):
            return {k: self._encode_arg(v) for k, v in value.items()}
        return value

    def _call(
        self,
        ref: Remote | None,
        args,
        kwargs,
        op: Literal["call", "probe"] = "call",
        name: str | None = None,
    ):
        label = f"{ref._label}(...)" if ref is not None else f"probe {name}(...)"
        message = protocol.request(
            op,
            args=[self._encode_arg(a) for a in args],
            kwargs={k: self._encode_arg(v) for k, v in kwargs.items()},
        )
        if ref is not None:  # a call
            message["target"] = self._target_of(ref)
        else:  # a probe
            message["name"] = name
        reply = self._request(message, label)
        if reply.get("plain"):
            return reply["value"]
        return Remote(
            self,
            reply["value"],
            [],
            self._session.generation,
            f"{label} -> {reply.get('type', 'object')}",
        )

    def _request(self, message: dict, label: str) -> dict:
        # Anything that ran out of time once (a call, a value fetch that runs student code
        # through .numpy(), a probe) is not asked again: forty checks of an endless loop
        # would otherwise cost forty timeouts.
        key = _request_key(message, self._session.generation)
        earlier = self._session.timed_out_before(key)
        if earlier is not None:
            again = "called" if key[0] in ("call", "probe") else "asked for"
            raise WorkerGone(f"`{label}` was not {again} again: an earlier request {earlier}")
        try:
            reply = self._session.request(message)
        except WorkerFailure as exc:
            if exc.kind in ("timeout", "interrupted"):
                self._session.note_timed_out(key, exc.message)
                raise WorkerGone(
                    f"`{label}` {exc.message}: is there an endless loop, or a loop over every "
                    "pixel that is far too slow?"
                ) from None
            raise WorkerGone(f"`{label}` could not be run: {exc.message}") from None
        if reply.get("ok"):
            return reply
        kind = reply.get("kind")
        if kind == "missing":
            raise MissingName(f"your notebook does not define `{reply.get('name')}`")
        if kind == "raised":
            ename, evalue = str(reply.get("ename")), str(reply.get("evalue"))
            # A plain sentence first, then only the error's first line: TensorFlow's
            # messages run to many lines of internals.
            first = evalue.strip().splitlines()[0][:300] if evalue.strip() else ""
            text = f"your code raised an error when the check called `{label}`: {ename}" + (
                f": {first}" if first else ""
            )
            if ename == "NotImplementedError":
                text += " (this part is not written yet)"
            raise StudentCodeRaised(text, ename, evalue)
        if kind == "not_plain":
            raise NotPlainData(
                f"`{label}` is not an array or number (it is {reply.get('message')})"
            )
        raise CheckFailure(f"`{label}` failed: {reply.get('message', kind)}")


def _request_key(message: dict, generation: int) -> tuple:
    """What a request asks for, as the key of the session's timed-out memo.

    A notebook-level name (``("call", "smooth")``) keeps its key across restarts; an object
    that lives in the worker is named by its handle, which only its worker generation knows.
    """
    op = message.get("op")
    if op == "probe":
        return ("probe", message.get("name"))
    if op == "has":
        return ("has", message.get("name"))
    target = message.get("target") or {}
    base = target.get("base")
    path = tuple(target.get("path") or ())
    if base is None:
        return (op, *path)
    return (op, "handle", generation, getattr(base, "id", None), *path)


class _Probes:
    def __init__(self, student: Student) -> None:
        self._student = student

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            return self._student._call(None, args, kwargs, op="probe", name=name)

        return call
