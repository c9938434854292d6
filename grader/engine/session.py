"""One submission's live notebook: runs its cells, answers the checks, survives crashes.

If the worker dies (a timeout it ignored, ``os._exit``, a crash), the next request starts a
new worker and replays the cells that completed the first time, so later checks still get a
fair chance. Timed-out cells are never replayed.

Time: running the notebook, and every replay of it however often the worker dies, shares
one budget (``Timeouts.notebook``); the checks' calls share a second one
(``Timeouts.checks``, by default as long), each call bounded by ``Timeouts.call``. So one
submission holds a worker for at most the sum of the two, plus a grace period per kill.

Outputs: what the session keeps for ``executed.ipynb`` is bounded for the whole notebook
(:data:`MAX_NOTEBOOK_OUTPUT_BYTES`, :data:`MAX_CELLS_WITH_OUTPUT`); past either, a note says
what was dropped. The worker caps each cell's outputs too, but the worker is not trusted.
"""

from __future__ import annotations

import json
import time

from grader.engine import seeding
from grader.engine.notebook import Cell
from grader.engine.worker_process import WorkerProcess
from grader.errors import WorkerFailure
from grader.outputs.results import CellRecord
from grader.sandbox.launcher import Launcher
from grader.sandbox.limits import Timeouts
from grader.worker import protocol

MAX_RESTARTS = 3
MAX_NOTEBOOK_OUTPUT_BYTES = 8 * 1024 * 1024  # in executed.ipynb, as nbformat writes it
MAX_CELLS_WITH_OUTPUT = 1000
MAX_SHELL_COMMANDS = 100


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
        self.worker: WorkerProcess | None = None
        self.generation = 0
        self.restarts = 0
        self.replayable: list[Cell] = []
        self.outputs: dict[int, list] = {}
        self.records: list[CellRecord] = []
        self.shell_commands: list[str] = []
        self.notes: list[str] = []
        self.gave_up = ""
        self._timed_out: dict[tuple, str] = {}  # requests that ran out of time, and how
        # Absolute deadlines (time.monotonic()): set when each phase starts.
        self.notebook_deadline: float | None = None
        self.checks_deadline: float | None = None
        self.output_bytes = 0
        self.cells_with_output = 0
        self.output_note = ""  # why outputs were dropped, once the notebook's cap is hit

    # -- lifecycle -----------------------------------------------------------------------
    def _start(self) -> None:
        self.worker = worker = self.launcher.spawn(self.slot)
        self.generation += 1
        # Before any cell (and before a restarted worker replays them): the same seed for
        # the same submission, and the packages it may import.
        setup = protocol.request(
            "setup",
            seed=seeding.notebook_seed(self.content_key),
            packages=None if self.packages is None else list(self.packages),
        )
        try:
            worker.request(setup, self.timeouts.call)
        except WorkerFailure:
            pass  # the first cell finds the worker dead and restarts it
        for note in worker.notes:
            if note not in self.notes:
                self.notes.append(note)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def run_notebook(self) -> None:
        """Run every code cell once, in order, recording what happened to each."""
        deadline = time.monotonic() + self.timeouts.notebook
        self.notebook_deadline = deadline
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
            self.records.append(self._run_cell(cell, min(self.timeouts.cell, remaining), deadline))

    def _run_cell(self, cell: Cell, timeout: float, deadline: float) -> CellRecord:
        started = time.monotonic()
        try:
            if self.worker is None or not self.worker.alive:
                # The replay spends the notebook's budget, not a fresh one.
                self._restart(replay_deadline=deadline)
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    raise _GiveUp(
                        f"the notebook used up its {self.timeouts.notebook:g} s "
                        "(replaying it after a crash)",
                        "NotebookTimeout",
                    )
            reply = self._live().request(protocol.request("run_cell", source=cell.source), timeout)
        except WorkerFailure as exc:
            elapsed = time.monotonic() - started
            status = "timeout" if exc.kind in ("timeout", "interrupted") else "killed"
            if exc.kind == "interrupted":
                self._keep(cell.index, [_error_output("TimeoutError", exc.message)])
            else:
                self._keep(cell.index, [_error_output(_died_of(exc), exc.message)])
            return CellRecord(
                cell.index,
                status,
                elapsed,
                "Timeout" if status == "timeout" else _died_of(exc),
                exc.message,
            )
        except _GiveUp as exc:
            return CellRecord(cell.index, "skipped", 0.0, exc.ename, exc.message)
        self.replayable.append(cell)
        # The reply was checked by the client (grader.engine.replies): fields have their types.
        self._keep(cell.index, reply["outputs"])
        room = MAX_SHELL_COMMANDS - len(self.shell_commands)
        self.shell_commands += reply["shell_commands"][: max(0, room)]
        err = reply["error"]
        duration = reply["duration"]
        if err:
            return CellRecord(cell.index, "error", duration, err["ename"], err["evalue"][:500])
        return CellRecord(cell.index, "ok", duration)

    def _keep(self, index: int, outputs: list[dict]) -> None:
        """Keep a cell's outputs for executed.ipynb, within the notebook's caps."""
        kept = []
        for output in outputs:
            size = _nbformat_size(output)
            if (
                self.cells_with_output >= MAX_CELLS_WITH_OUTPUT
                or self.output_bytes + size > MAX_NOTEBOOK_OUTPUT_BYTES
            ):
                if not self.output_note:
                    self.output_note = (
                        f"outputs from cell {index + 1} on were not kept: a notebook keeps at "
                        f"most {MAX_NOTEBOOK_OUTPUT_BYTES // 2**20} MiB of output, from at "
                        f"most {MAX_CELLS_WITH_OUTPUT} cells"
                    )
                    kept.append(
                        {
                            "output_type": "stream",
                            "name": "stderr",
                            "text": f"[convgrade: {self.output_note}]\n",
                        }
                    )
                break
            self.output_bytes += size
            kept.append(output)
        if kept:
            self.cells_with_output += 1
        self.outputs[index] = kept

    def _restart(self, replay_deadline: float) -> None:
        """A new worker, with the completed cells replayed until ``replay_deadline``."""
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
                self._live().request(
                    protocol.request("run_cell", source=cell.source),
                    min(self.timeouts.cell, remaining),
                )
            except WorkerFailure:
                if self.worker is None or not self.worker.alive:
                    self._restart(replay_deadline)
                    return

    # -- requests from checks ------------------------------------------------------------
    def request(self, message: dict, timeout: float | None = None) -> dict:
        """One request from a check, within the call's and the checks' time budgets.

        Raises:
            WorkerFailure: the worker failed, or the checks' budget is spent (kind
                ``"budget"``).
        """
        if self.checks_deadline is None:
            self.checks_deadline = time.monotonic() + self.timeouts.checks_budget
        deadline = self.checks_deadline
        self._check_budget(deadline)
        if self.worker is None or not self.worker.alive:
            try:
                # A replay for the checks spends the checks' budget.
                self._restart(deadline)
            except _GiveUp as exc:
                raise WorkerFailure("died", str(exc)) from None
        remaining = self._check_budget(deadline)
        call = timeout or self.timeouts.call
        try:
            return self._live().request(message, min(call, remaining))
        except WorkerFailure as exc:
            if exc.kind in ("timeout", "interrupted") and remaining < call:
                raise WorkerFailure(
                    exc.kind,
                    f"was stopped when the checks used up their {self.timeouts.checks_budget:g} "
                    "s for this notebook",
                ) from None
            raise

    def timed_out_before(self, key: tuple) -> str | None:
        """How the request ``key`` ran out of time before, or None if it did not."""
        return self._timed_out.get(key)

    def note_timed_out(self, key: tuple, how: str) -> None:
        """Remember that the request ``key`` ran out of time: it is not asked again."""
        self._timed_out[key] = how

    def _live(self) -> WorkerProcess:
        """The current worker (a dead one fails its requests itself)."""
        if self.worker is None:
            raise WorkerFailure("died", "the notebook's process is no longer running")
        return self.worker

    def _check_budget(self, deadline: float) -> float:
        """The seconds left to the checks, or WorkerFailure("budget") when none are."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WorkerFailure(
                "budget",
                f"the checks used up their {self.timeouts.checks_budget:g} s for this notebook",
            )
        return remaining


class _GiveUp(Exception):
    """No worker for this cell: it died too often ("WorkerDied") or time ran out."""

    def __init__(self, message: str, ename: str = "WorkerDied") -> None:
        super().__init__(message)
        self.message = message
        self.ename = ename


def _nbformat_size(output: dict) -> int:
    """An upper bound on the bytes nbformat writes for ``output``.

    ASCII-escaped JSON is never shorter than nbformat's UTF-8, and nbformat writes each line of
    a text as its own indented list item (about 20 bytes more per line).
    """
    text = json.dumps(output)
    return len(text) + 20 * text.count("\\n")


def _error_output(ename: str, evalue: str) -> dict:
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": []}


def _died_of(exc: WorkerFailure) -> str:
    # memlimit: a worker killed for its memory budget makes the submission's status "memory"
    return "MemoryError" if exc.kind == "memory" else "WorkerDied"
