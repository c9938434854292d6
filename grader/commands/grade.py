"""``convgrade grade``: grade a class here or on a Dask cluster, with progress and a summary.

Both ways take the same PATHs and options, write the same files and exit with the same codes:
0 when every submission was graded, 1 when some could not be.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TextIO

from grader.errors import StaffError
from grader.sandbox.limits import LIMIT_KEYS, resolve_limits


def _given_limits(args: argparse.Namespace) -> dict[str, float | None]:
    """The limits the command line set (None where it left them to the assignment)."""
    return {key: getattr(args, key, None) for key in LIMIT_KEYS}


class Reporter:
    """Progress on a terminal (one updating line) or plain lines in logs and CI."""

    def __init__(self, stream, quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.started = time.monotonic()

    def __call__(self, p) -> None:
        if self.quiet:
            return
        r = p.result
        tag = " (unchanged, reused)" if p.reused else ""
        line = f"[{p.done}/{p.total}] {r.submission}: {r.score:g}/{r.max_score:g} {r.status}{tag}"
        if self.tty:
            width = 24
            filled = int(width * p.done / max(1, p.total))
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r\x1b[2K[{bar}] {line}")
            if p.done == p.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def summary(results, out: Path, elapsed: float) -> str:
    from grader.engine.static_imports import is_environment_line

    graded = [r for r in results if r.graded]
    failed = [r for r in results if not r.graded]
    scores = [r.score for r in graded]
    max_score = results[0].max_score if results else 0
    rows = [
        ("submissions", str(len(results))),
        ("graded", str(len(graded))),
        ("not graded", str(len(failed))),
        ("mean score", f"{statistics.mean(scores):.2f} / {max_score:g}" if scores else "-"),
        ("median score", f"{statistics.median(scores):g} / {max_score:g}" if scores else "-"),
        ("wall time", f"{elapsed:.1f} s"),
        ("results", str(out / "grades.csv")),
    ]
    width = max(len(k) for k, _ in rows)
    # At the top: what grading could not import, per submission.
    env = [f"{r.submission}: {e}" for r in results for e in r.errors if is_environment_line(e)]
    lines = env[:20]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    for r in failed:
        lines.append(f"  not graded: {r.submission} ({r.status}): {'; '.join(r.errors)[:200]}")
    return "\n".join(lines) + "\n"


def cmd_grade(args, out_stream, err_stream) -> int:
    # The zygote's start (importing TensorFlow, seconds) is the batch's critical path: start
    # it first, and import the grading machinery while it runs.
    from grader.authoring import assignment as assignment_mod
    from grader.sandbox.bubblewrap import UNSANDBOXED_WARNING
    from grader.sandbox.launcher import launcher_for

    # --cluster, else $DASK_SCHEDULER_ADDRESS: grade on Dask (docs/scaling-out.md).
    if address := args.cluster or os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return _grade_on_cluster(args, address, out_stream, err_stream)
    started = time.monotonic()
    asg = assignment_mod.load(args.assignment)
    limits = resolve_limits(asg.limits, **_given_limits(args))
    out = Path(args.out)
    launcher = launcher_for(
        asg,
        limits,
        channels=max(1, args.jobs),
        warm=not args.fresh_workers,
        hidden=(out.resolve(), *[Path(p).resolve() for p in args.paths]),
        sandbox="off" if args.no_sandbox else "require",
    )
    launcher.start(wait=False)
    try:
        from grader.engine.batch import grade_batch
        from grader.engine.grading import GradeOptions
        from grader.engine.pytest_plugin import collect_checks
        from grader.engine.submissions import collect_to_grade

        with tempfile.TemporaryDirectory(prefix="convgrade-") as tmp:
            subs = collect_to_grade(args.paths, Path(tmp))
            checks = collect_checks(asg)
            if not launcher.isolation.sandboxed:
                err_stream.write(UNSANDBOXED_WARNING)
            results = grade_batch(
                subs,
                asg,
                checks,
                launcher,
                GradeOptions(timeouts=limits.timeouts, packages=asg.packages),
                out,
                jobs=args.jobs,
                reuse=not args.force,
                on_progress=Reporter(err_stream, args.quiet),
            )
    finally:
        launcher.close()
    out_stream.write(summary(results, out, time.monotonic() - started))
    return 0 if all(r.graded for r in results) else 1


def _grade_on_cluster(
    args: argparse.Namespace, address: str, out_stream: TextIO, err_stream: TextIO
) -> int:
    """``convgrade grade --cluster``: the same inputs, output and exit codes as local."""
    import tempfile

    from grader.authoring import assignment as assignment_mod
    from grader.cluster.dask_client import grade_on_cluster
    from grader.engine.grading import GradeOptions
    from grader.engine.pytest_plugin import collect_checks
    from grader.engine.submissions import collect_to_grade
    from grader.sandbox.bubblewrap import UNSANDBOXED_WARNING

    started = time.monotonic()
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise StaffError(
            f"--cluster {address} needs Dask distributed, which is not installed: "
            "pip install 'convgrade[cluster]' (or dask[distributed]), on this machine and on "
            "every cluster machine."
        ) from None
    asg = assignment_mod.load(args.assignment)
    limits = resolve_limits(asg.limits, **_given_limits(args))
    out = Path(args.out)

    def warn(isolation: str) -> None:
        if not isolation.startswith("sandboxed"):
            err_stream.write(UNSANDBOXED_WARNING)

    with tempfile.TemporaryDirectory(prefix="convgrade-") as tmp:
        subs = collect_to_grade(args.paths, Path(tmp))
        checks = collect_checks(asg)
        results = grade_on_cluster(
            address,
            subs,
            asg,
            checks,
            GradeOptions(timeouts=limits.timeouts, packages=asg.packages),  # as cmd_grade
            out,
            limits.worker.memory_mib,
            "off" if args.no_sandbox else "require",
            reuse=not args.force,
            on_progress=Reporter(err_stream, args.quiet),
            on_isolation=warn,
        )
    out_stream.write(summary(results, out, time.monotonic() - started))
    return 0 if all(r.graded for r in results) else 1
