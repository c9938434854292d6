"""Every limit on one submission, with its default stated once.

The trusted side resolves each limit (the command line, else the assignment's ``[limits]``,
else the default here) and sends the worker's share in its spawn request; the worker reads
the request and holds no defaults of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# What an assignment's [limits] table and the command line may set, by the same names.
LIMIT_KEYS = ("cell_timeout", "notebook_timeout", "call_timeout", "memory_mib")


@dataclass(frozen=True)
class Timeouts:
    """Seconds: one cell, the whole notebook, one call from a check, all the checks' calls."""

    cell: float = 60.0
    notebook: float = 600.0
    call: float = 10.0
    checks: float | None = None  # all the checks' calls of one submission; None: = notebook

    @property
    def checks_budget(self) -> float:
        return self.notebook if self.checks is None else self.checks


@dataclass(frozen=True)
class WorkerLimits:
    """What the sandbox enforces on one worker process."""

    memory_mib: int = 2048
    max_processes: int = 256
    disk_mib: int = 256
    max_open_files: int = 256
    tf_threads: int = 1

    def as_dict(self) -> dict[str, int]:
        """The part of a spawn request the worker applies to itself (worker/sandbox.py)."""
        return {
            "memory_mib": self.memory_mib,
            "max_processes": self.max_processes,
            "disk_mib": self.disk_mib,
            "max_open_files": self.max_open_files,
        }


@dataclass(frozen=True)
class Limits:
    """The timeouts and the worker's limits of one grading run."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    worker: WorkerLimits = field(default_factory=WorkerLimits)


def resolve_limits(assignment: Mapping[str, float], **given: float | None) -> Limits:
    """Each limit from ``given`` (None: not given), else ``assignment`` (its ``[limits]``),
    else the default above."""

    def pick(key: str, default: float) -> float:
        value = given.get(key)
        return assignment.get(key, default) if value is None else value

    d = Limits()
    timeouts = Timeouts(
        cell=pick("cell_timeout", d.timeouts.cell),
        notebook=pick("notebook_timeout", d.timeouts.notebook),
        call=pick("call_timeout", d.timeouts.call),
    )
    return Limits(timeouts, WorkerLimits(memory_mib=int(pick("memory_mib", d.worker.memory_mib))))
