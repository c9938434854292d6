"""The worker's request loop: run cells, then answer the checks' calls.

Every reply is plain data (see :mod:`.protocol`). Results that are not plain data stay here
in a handle table and only their integer id crosses. Student objects are converted to plain
data *here*, in the untrusted process: whatever a lying ``__eq__`` or ``__array__`` does, only
bytes of a real array reach the grader, where the comparison happens.
"""

from __future__ import annotations

import builtins
import traceback

# Student code may replace builtins (e.g. isinstance); this module keeps the originals.
from builtins import (  # noqa: E402, UP029
    bool,
    callable,
    dict,
    float,
    getattr,
    int,
    isinstance,
    len,
    list,
    str,
    tuple,
    type,
)
from types import ModuleType

import numpy as np

from . import probes as _probes_module
from . import protocol
from .executor import CellRunner, restore_builtins, strip_ansi

# The assignment's probes as loaded, taken before any cell runs (:func:`install_probes`): a
# notebook that reassigns a function of the probes module does not change what a check's
# probe runs. This is not what makes probes safe (the student's process can reach anything
# in it); the checks accept a probe's answer only where they can verify it
# (docs/checks-api.md).
_PROBES: dict = {}


def install_probes(module: ModuleType | None) -> None:
    """Serve the probes of ``module`` (see :mod:`.probes`); None serves none."""
    _PROBES.clear()
    _PROBES.update(_probes_module.table(module))


MAX_HANDLES = 10_000
MAX_STR = 1_000_000


class NotPlain(Exception):
    pass


def to_plain(value, depth: int = 0):
    """Convert a student value to plain data, or raise :class:`NotPlain`."""
    if depth > 16:
        raise NotPlain("nested too deeply")
    if value is None or type(value) in (bool, int, float):
        return value
    if type(value) is str:
        if len(value) > MAX_STR:
            raise NotPlain("string too long")
        return value
    if isinstance(value, np.generic):
        return to_plain(value.item(), depth + 1)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc?":
            raise NotPlain(f"array of dtype {value.dtype}")
        return np.array(value, copy=True).view(np.ndarray)
    cls_name = type(value).__name__
    if cls_name == "TensorShape" and hasattr(value, "as_list"):
        try:
            return tuple(value.as_list())
        except ValueError:
            raise NotPlain("shape of unknown rank") from None
    if isinstance(value, int):  # a subclass: keep the real value, not its overrides
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if callable(getattr(value, "numpy", None)) and not isinstance(value, type):
        try:
            arr = value.numpy()
        except Exception as exc:
            raise NotPlain(f".numpy() raised {type(exc).__name__}") from None
        return to_plain(np.asarray(arr), depth + 1)
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise NotPlain("dict with non-str keys")
        return {k: to_plain(v, depth + 1) for k, v in value.items()}
    raise NotPlain(cls_name)


class Server:
    """Answers requests from the grader over one channel."""

    def __init__(self, channel: protocol.Channel) -> None:
        self.channel = channel
        self.runner: CellRunner | None = None
        self.handles: dict[int, object] = {}
        self.next_handle = 1

    # -- helpers -------------------------------------------------------------------------
    def _runner(self) -> CellRunner:
        if self.runner is None:
            from .executor import take_runner

            self.runner = take_runner()
        return self.runner

    def _namespace(self) -> dict:
        return self._runner().namespace

    def _store(self, obj) -> protocol.Handle:
        if len(self.handles) >= MAX_HANDLES:
            raise RuntimeError("too many live objects")
        hid = self.next_handle
        self.next_handle += 1
        self.handles[hid] = obj
        return protocol.Handle(hid)

    def _materialise(self, value):
        """Replace handles inside request arguments by the objects they stand for."""
        if isinstance(value, protocol.Handle):
            return self.handles[value.id]
        if isinstance(value, list):
            return [self._materialise(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._materialise(v) for v in value)
        if isinstance(value, dict):
            return {k: self._materialise(v) for k, v in value.items()}
        return value

    def _resolve(self, target: dict):
        base = target.get("base")
        path = list(target.get("path") or [])
        if base is None:
            if not path:
                raise ValueError("empty target")
            ns = self._namespace()
            name = path.pop(0)
            if name not in ns:
                return _Missing(name)
            obj = ns[name]
        else:
            obj = self.handles[base.id]
        for attr in path:
            obj = getattr(obj, attr)
        return obj

    def _reply_value(self, value, want: str = "auto") -> dict:
        if want != "handle":
            try:
                return {"ok": True, "value": to_plain(value), "plain": True}
            except NotPlain as exc:
                if want == "value":
                    return protocol.failure("not_plain", message=str(exc))
        return {
            "ok": True,
            "value": self._store(value),
            "plain": False,
            "type": type(value).__name__,
        }

    # -- operations ----------------------------------------------------------------------
    def op_run_cell(self, req):
        result = self._runner().run(str(req["source"]))
        return {"ok": True, **result}

    def op_has(self, req):
        return {"ok": True, "value": str(req["name"]) in self._namespace()}

    def op_call(self, req):
        fn = self._resolve(req["target"])
        if isinstance(fn, _Missing):
            return protocol.failure("missing", name=fn.name)
        args = self._materialise(req.get("args") or [])
        kwargs = self._materialise(req.get("kwargs") or {})
        return self._reply_value(fn(*args, **kwargs), req.get("want", "auto"))

    def op_value(self, req):
        obj = self._resolve(req["target"])
        if isinstance(obj, _Missing):
            return protocol.failure("missing", name=obj.name)
        return self._reply_value(obj, req.get("want", "value"))

    def op_type(self, req):
        obj = self._resolve(req["target"])
        if isinstance(obj, _Missing):
            return protocol.failure("missing", name=obj.name)
        return {"ok": True, "value": type(obj).__name__}

    def op_probe(self, req):
        name = str(req["name"])
        probe = _PROBES.get(name)
        if probe is None:
            return {"ok": False, "kind": "usage", "message": f"no probe named {name!r}"}
        args = self._materialise(req.get("args") or [])
        kwargs = self._materialise(req.get("kwargs") or {})
        return self._reply_value(probe(*args, **kwargs), req.get("want", "auto"))

    def op_setup(self, req):
        """Before the notebook runs: the seed, and the packages its cells may import."""
        from . import imports, seeding

        packages = req.get("packages")
        imports.configure(None if packages is None else [str(p) for p in packages])
        seeding.seed_everything(int(req["seed"]))
        return {"ok": True}

    def op_seed(self, req):
        """Before a check's calls: reseed from the check's own seed."""
        from . import seeding

        seeding.seed_for_check(int(req["seed"]))
        return {"ok": True}

    def op_release(self, req):
        for hid in req.get("ids") or []:
            self.handles.pop(hid, None)
        return {"ok": True}

    def op_ping(self, req):
        return {"ok": True, "value": "pong"}

    def serve(self) -> None:
        while True:
            try:
                req = self.channel.recv()
            except protocol.ChannelClosed:
                return
            op = req.get("op")
            if op == "bye":  # the one operation without a handler: it ends the loop
                self.channel.send({"ok": True})
                return
            handler = getattr(self, f"op_{op}", None) if op in protocol.OPS else None
            builtins_before = dict(vars(builtins))
            try:
                if handler is None:
                    reply = protocol.failure("usage", message=f"unknown op {op!r}")
                else:
                    reply = handler(req)
            except KeyboardInterrupt:
                reply = protocol.failure("interrupted", message="interrupted")
            except BaseException as exc:  # student code may raise anything, even SystemExit
                try:
                    reply = _exception_reply(exc)
                except BaseException:  # an exception whose str() or traceback itself fails
                    reply = protocol.failure(
                        "raised",
                        ename="Exception",
                        evalue="(an exception that could not be printed)",
                    )
            # A call from a check may have replaced builtins (json, traceback rely on them).
            restore_builtins(builtins_before)
            try:
                self.channel.send(reply)
            except TypeError as exc:  # reply not encodable (e.g. too large)
                self.channel.send(protocol.failure("too_large", message=str(exc)))


class _Missing:
    def __init__(self, name: str) -> None:
        self.name = name


def _exception_reply(exc: BaseException) -> dict:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return protocol.failure(
        "raised",
        ename=type(exc).__name__,
        evalue=strip_ansi(str(exc))[:2000],
        traceback=strip_ansi(tb)[-8000:],
    )
