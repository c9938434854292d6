"""Loading the assignment's probes: trusted helpers that run inside the worker.

An assignment may name a Python file of probes in ``assignment.toml`` (``[worker] probes``).
A check calls ``student.probe.NAME(...)``; the worker runs ``NAME`` from that file with the
arguments decoded (numpy arrays, plain values, or the real worker-side objects behind
handles) and sends back the plain-data result. Probes do what a check cannot do from the
other side of the process boundary, such as timing or differentiating a student's function
where it lives.

The file is bound read-only into the sandbox beside this package and loaded once, by the
zygote, before any worker is forked, so before any cell runs. Its probes are the names in its
``__all__``. An optional ``warm_up()`` function in it (not a probe) is run by the zygote's
warm-up (see :mod:`.warmup`).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

MODULE_NAME = "cgprobes"
WARM_UP = "warm_up"


class ProbesUnusable(Exception):
    """The assignment's probes file could not be loaded."""


def load(path: str) -> ModuleType:
    """Import the probes file at ``path`` as module ``cgprobes``.

    Raises:
        ProbesUnusable: the file is missing, raises on import, or has no ``__all__`` list.
    """
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ProbesUnusable(f"no probes file at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[MODULE_NAME]
        raise ProbesUnusable(f"the probes file {path} raised {type(exc).__name__}: {exc}") from exc
    names = getattr(module, "__all__", None)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ProbesUnusable(f"the probes file {path} must list its probes in __all__")
    return module


def table(module: ModuleType | None) -> dict:
    """Probe name -> function, for every name in the module's ``__all__``."""
    if module is None:
        return {}
    return {name: getattr(module, name) for name in module.__all__}
