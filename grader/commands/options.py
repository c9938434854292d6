"""Every command-line option, declared once with its help text.

Commands pick options from :data:`OPTIONS` by name; resolving a value follows one rule:
the command line, then the assignment's ``[limits]``, then the default here.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from grader.sandbox.limits import Timeouts, WorkerLimits


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    dest: str
    help: str
    type: Any = None
    default: Any = None
    metavar: str | None = None
    action: str | None = None
    limit_key: str | None = None  # the assignment.toml [limits] key that may set it


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


OPTIONS: dict[str, Option] = {
    o.dest: o
    for o in [
        Option(
            ("--assignment", "-a"),
            "assignment",
            "assignment folder (with assignment.toml) or the name of a bundled one "
            "(default: the bundled assignment, when exactly one is bundled)",
            default=None,
            metavar="NAME_OR_DIR",
        ),
        Option(
            ("--out", "-o"),
            "out",
            "folder for grades.csv and one folder per submission",
            default="grades",
            metavar="DIR",
        ),
        Option(
            ("--jobs", "-j"),
            "jobs",
            "notebooks run in parallel (default: number of cores)",
            type=_positive_int,
            default=os.cpu_count() or 1,
            metavar="N",
        ),
        Option(
            ("--cell-timeout",),
            "cell_timeout",
            "seconds one notebook cell may run",
            type=_positive_float,
            default=Timeouts.cell,
            metavar="S",
            limit_key="cell_timeout",
        ),
        Option(
            ("--timeout",),
            "notebook_timeout",
            "seconds the whole notebook may run",
            type=_positive_float,
            default=Timeouts.notebook,
            metavar="S",
            limit_key="notebook_timeout",
        ),
        Option(
            ("--call-timeout",),
            "call_timeout",
            "seconds one call from a check into the notebook may run",
            type=_positive_float,
            default=Timeouts.call,
            metavar="S",
            limit_key="call_timeout",
        ),
        Option(
            ("--memory",),
            "memory_mib",
            "memory (MiB) student code may allocate",
            type=_positive_int,
            default=WorkerLimits.memory_mib,
            metavar="MIB",
            limit_key="memory_mib",
        ),
        Option(
            ("--force",),
            "force",
            "grade every submission again, even when its notebook and the checks are "
            "unchanged since the results in --out were written",
            action="store_true",
            default=False,
        ),
        Option(
            ("--fresh-workers",),
            "fresh_workers",
            "start a new Python for every notebook instead of forking a pre-warmed one "
            "(slower; for comparison)",
            action="store_true",
            default=False,
        ),
        Option(
            ("--quiet", "-q"), "quiet", "no progress output", action="store_true", default=False
        ),
        Option(
            ("--no-sandbox",),
            "no_sandbox",
            "run the notebooks WITHOUT the sandbox, with your own rights: for trusted "
            "notebooks only (your own solution), never for students' work. Without this flag "
            "grading refuses to start where no sandbox can be made, and says why and how to "
            "fix it. Every result.json records the choice",
            action="store_true",
            default=False,
        ),
        Option(
            ("--cluster",),
            "cluster",
            "grade on the Dask scheduler at ADDRESS (e.g. tcp://host:8786; needs "
            "`pip install convgrade[cluster]`). Without it, $DASK_SCHEDULER_ADDRESS is used "
            "when set; else grading is local",
            metavar="ADDRESS",
        ),
        Option(
            ("--out", "-o"),
            "release_out",
            "folder for the student notebook and the student zip",
            default="release",
            metavar="DIR",
        ),
        Option(
            ("--out", "-o"),
            "autograder_out",
            "the Gradescope autograder zip to write",
            default="autograder.zip",
            metavar="ZIP",
        ),
        Option(
            ("--out", "-o"),
            "report_out",
            "where to write the HTML report (default: GRADES_DIR/report.html)",
            metavar="FILE",
        ),
        Option(
            ("--junit",), "junit", "also write the results as JUnit XML (for CI)", metavar="FILE"
        ),
    ]
}


def add(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        o = OPTIONS[name]
        kwargs: dict[str, Any] = {"dest": o.dest, "help": o.help}
        if o.action:
            kwargs["action"] = o.action
        else:
            kwargs["type"] = o.type
            kwargs["metavar"] = o.metavar
        # None marks "not given", so the assignment's [limits] can fill it in.
        kwargs["default"] = None if o.limit_key else o.default
        # A help text may state its default in words, e.g. "(default: number of cores)".
        if "(default:" not in o.help and (o.limit_key or o.default not in (None, False)):
            kwargs["help"] += f" (default: {o.default}" + (
                ", or the assignment's [limits])" if o.limit_key else ")"
            )
        parser.add_argument(*o.flags, **kwargs)
