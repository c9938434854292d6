"""One submission's live notebook: runs its cells, answers the checks, survives crashes.

If the worker dies (a timeout it ignored, ``os._exit``, a crash), the next request starts a
new worker and replays the cells that completed the first time, so later checks still get a
fair chance. Timed-out cells are never replayed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import seeding
from .errors import WorkerFailure
from .launcher import Launcher
from .notebook import Cell
from .results import CellRecord

MAX_RESTARTS = 3


@dataclass(frozen=True)
class Timeouts:
    cell: float = 60.0
    notebook: float = 600.0
    call: float = 10.0


class NotebookSession:
    def __init__(
        self,
        launcher: Launcher,
        cells: tuple[Cell, ...],
        timeouts: Timeouts,
        slot=0,
        packages: tuple[str, ...] | None = None,
    ):
        self.launcher = launcher
        self.packages = packages  # what the cells may import (None: whatever is installed)
        self.content_key = seeding.content_key(c.source for c in cells)
        self.cells = cells
        self.timeouts = timeouts
        self.slot = slot
        self.worker = None
        self.generation = 0
        self.restarts = 0
        self.replayable: list[Cell] = []
        self.outputs: dict[int, list] = {}
        self.records: list[CellRecord] = []
        self.shell_commands: list[str] = []
        self.notes: list[str] = []
        self.gave_up = ""
        self.timed_out: dict[tuple, str] = {}  # functions that ran out of time, and how

    # -- lifecycle -----------------------------------------------------------------------
    def _start(self) -> None:
        self.worker = self.launcher.spawn(self.slot)
        self.generation += 1
        # Before any cell (and before a restarted worker replays them): the same seed for
        # the same submission, and the packages it may import.
        setup = {"op": "setup", "seed": seeding.notebook_seed(self.content_key)}
        setup["packages"] = None if self.packages is None else list(self.packages)
        try:
            self.worker.request(setup, self.timeouts.call)
        except WorkerFailure:
            pass  # the first cell finds the worker dead and restarts it
        for note in self.worker.notes:
            if note not in self.notes:
                self.notes.append(note)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def run_notebook(self) -> None:
        """Run every code cell once, in order, recording what happened to each."""
        deadline = time.monotonic() + self.timeouts.notebook
        self._start()
        for cell in self.cells:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.records.append(
                    CellRecord(
                        cell.index,
                        "skipped",
                        0.0,
                        "NotebookTimeout",
                        f"the notebook used up its {self.timeouts.notebook:g} s",
                    )
                )
                continue
            self.records.append(self._run_cell(cell, min(self.timeouts.cell, remaining)))

    def _run_cell(self, cell: Cell, timeout: float) -> CellRecord:
        started = time.monotonic()
        try:
            if self.worker is None or not self.worker.alive:
                self._restart(replay_deadline=started + self.timeouts.notebook)
            reply = self.worker.request({"op": "run_cell", "source": cell.source}, timeout)
        except WorkerFailure as exc:
            elapsed = time.monotonic() - started
            status = "timeout" if exc.kind in ("timeout", "interrupted") else "killed"
            if exc.kind == "interrupted":
                self.outputs[cell.index] = [_error_output("TimeoutError", exc.message)]
            else:
                self.outputs[cell.index] = [_error_output("WorkerDied", exc.message)]
            return CellRecord(
                cell.index,
                status,
                elapsed,
                "Timeout" if status == "timeout" else "WorkerDied",
                exc.message,
            )
        except _GiveUp as exc:
            return CellRecord(cell.index, "skipped", 0.0, "WorkerDied", str(exc))
        self.replayable.append(cell)
        self.outputs[cell.index] = list(reply.get("outputs") or [])
        self.shell_commands += [str(c) for c in reply.get("shell_commands") or []]
        err = reply.get("error")
        duration = float(reply.get("duration") or 0.0)
        if err:
            return CellRecord(
                cell.index,
                "error",
                duration,
                str(err.get("ename", "")),
                str(err.get("evalue", ""))[:500],
            )
        return CellRecord(cell.index, "ok", duration)

    def _restart(self, replay_deadline: float) -> None:
        if self.restarts >= MAX_RESTARTS:
            self.gave_up = f"the notebook's process died {self.restarts + 1} times"
            raise _GiveUp(self.gave_up)
        self.close()
        self.restarts += 1
        self._start()
        for cell in self.replayable:
            remaining = replay_deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.worker.request(
                    {"op": "run_cell", "source": cell.source}, min(self.timeouts.cell, remaining)
                )
            except WorkerFailure:
                if self.worker is None or not self.worker.alive:
                    self._restart(replay_deadline)
                    return

    # -- requests from checks ------------------------------------------------------------
    def request(self, message: dict, timeout: float | None = None) -> dict:
        if self.worker is None or not self.worker.alive:
            try:
                self._restart(time.monotonic() + self.timeouts.notebook)
            except _GiveUp as exc:
                raise WorkerFailure("died", str(exc)) from None
        return self.worker.request(message, timeout or self.timeouts.call)


class _GiveUp(Exception):
    pass


def _error_output(ename: str, evalue: str) -> dict:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": []}
