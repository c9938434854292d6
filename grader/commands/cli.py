"""The ``convgrade`` command. Only :func:`main` prints errors and picks the exit code.

Exit codes: 0 everything was graded (whatever the scores) / the command succeeded;
1 some submission could not be graded, or a check/validation failed; 2 bad usage or a bad
assignment (nothing was graded); 3 convgrade itself crashed (a bug: please report it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from pathlib import Path

from grader import __version__
from grader.commands import grade, options
from grader.errors import ConvgradeError, StaffError

EPILOG = """\
examples:
  convgrade grade submissions/ --out /tmp/g          # grade a class
  convgrade check my_notebook.ipynb                  # students: public checks only
  convgrade assign assignments/week1                 # build the student release
  convgrade validate assignments/week1 --junit v.xml # CI on a solution repo
  convgrade gradescope assignments/week1 --out autograder.zip
  convgrade report /tmp/g                            # report.html for a graded class

exit codes: 0 all graded, 1 some submissions could not be graded,
            2 bad usage or assignment, 3 internal error in convgrade
"""


def cmd_check(args, out_stream, err_stream) -> int:
    from grader.commands.check import run_check, table

    result = run_check(Path(args.notebook), args.assignment_opt)
    out_stream.write(table(result))
    return 0 if result.tests and all(t.status == "passed" for t in result.tests) else 1


def cmd_assign(args, out_stream, err_stream) -> int:
    from grader.authoring import assignment as assignment_mod
    from grader.authoring.release import build_release
    from grader.engine.pytest_plugin import collect_checks

    asg = assignment_mod.load(args.assignment_dir)
    checks = collect_checks(asg)
    err_stream.write("grading the solution and the generated student notebook...\n")
    nb_path, zip_path = build_release(asg, Path(args.release_out), checks)
    out_stream.write(f"student notebook: {nb_path}\nstudent release:  {zip_path}\n")
    return 0


def cmd_validate(args, out_stream, err_stream) -> int:
    from grader.authoring import assignment as assignment_mod
    from grader.commands.validate import validate, write_junit

    asg = assignment_mod.load(args.assignment_dir)
    items = validate(asg)
    for item in items:
        out_stream.write(f"{'ok  ' if item.ok else 'FAIL'}  {item.name}\n")
        if not item.ok:
            for line in item.message.splitlines()[:20]:
                out_stream.write(f"      {line}\n")
    failed = sum(not i.ok for i in items)
    out_stream.write(f"\n{len(items) - failed} of {len(items)} passed\n")
    if args.junit:
        write_junit(Path(args.junit), items, f"convgrade-validate-{asg.name}")
    return 0 if failed == 0 else 1


def cmd_gradescope(args, out_stream, err_stream) -> int:
    from grader.authoring import assignment as assignment_mod
    from grader.commands.gradescope import build_autograder
    from grader.engine.pytest_plugin import collect_checks

    asg = assignment_mod.load(args.assignment_dir)
    collect_checks(asg)
    path = build_autograder(asg.root, Path(args.autograder_out))
    out_stream.write(f"Gradescope autograder: {path}\n")
    return 0


def cmd_report(args, out_stream, err_stream) -> int:
    from grader.outputs.report import build_report

    path = build_report(Path(args.grades_dir), Path(args.report_out) if args.report_out else None)
    out_stream.write(f"report: {path}\n")
    return 0


Subparsers = argparse._SubParsersAction  # what add_subparsers() returns


def _sub(
    sub: Subparsers, name: str, help: str, description: str, example: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``convgrade`` parser: one sub-command per job, options from :mod:`.options`."""
    parser = argparse.ArgumentParser(
        prog="convgrade",
        description="Grade Jupyter notebooks with an assignment's pytest checks. "
        "Student code runs in a sandboxed process; hidden pytest checks run outside it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"convgrade {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_grade(sub)
    _add_check(sub)
    _add_assign(sub)
    _add_validate(sub)
    _add_gradescope(sub)
    _add_report(sub)
    return parser


def _add_grade(sub: Subparsers) -> None:
    g = sub.add_parser(
        "grade",
        help="grade notebooks, folders or zips of notebooks with the hidden checks",
        description="Run each notebook in its own sandboxed worker, score it with the "
        "assignment's public and hidden checks, and write grades.csv plus one folder per "
        "submission (result.json, feedback.md, results.json for Gradescope, executed.ipynb).",
        epilog="example:\n  convgrade grade submissions/ --out /tmp/g",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help=".ipynb files, folders (searched recursively) or .zip archives",
    )
    options.add(
        g,
        "assignment",
        "out",
        "jobs",
        "cell_timeout",
        "notebook_timeout",
        "call_timeout",
        "memory_mib",
        "force",
        "fresh_workers",
        "quiet",
        "no_sandbox",
        "cluster",
    )
    g.set_defaults(handler=grade.cmd_grade)


def _add_check(sub: Subparsers) -> None:
    c = _sub(
        sub,
        "check",
        "students: run the public checks on your notebook",
        "Run your saved notebook in a fresh process and the assignment's public checks on "
        "it; prints one row per check. Exit 0 when every public check passes, 1 otherwise. "
        "Hidden checks are not needed and never shown. The assignment is the folder with "
        "assignment.toml next to the notebook (the unpacked student zip), unless "
        "--assignment says otherwise.",
        "convgrade check week1/student.ipynb",
    )
    c.add_argument("notebook", metavar="NOTEBOOK", help="your .ipynb file (save it first)")
    c.add_argument(
        "--assignment",
        "-a",
        dest="assignment_opt",
        metavar="NAME_OR_DIR",
        help=options.OPTIONS["assignment"].help,
    )
    c.set_defaults(handler=cmd_check)


def _add_assign(sub: Subparsers) -> None:
    a = _sub(
        sub,
        "assign",
        "instructors: build the student release from source.ipynb",
        "Generate the student notebook (solutions stubbed, outputs cleared) and a zip with "
        "it, assignment.toml and the public checks. Refuses (exit 2) when the solution "
        "does not score the maximum, the student notebook scores above 0, or hidden "
        "material would be released.",
        "convgrade assign assignments/week1 --out release/",
    )
    a.add_argument("assignment_dir", metavar="ASSIGNMENT_DIR")
    options.add(a, "release_out")
    a.set_defaults(handler=cmd_assign)


def _add_validate(sub: Subparsers) -> None:
    v = _sub(
        sub,
        "validate",
        "CI: check an assignment keeps every promise",
        "Fail (exit 1) unless: checks collect and their points add up; the committed "
        "student.ipynb is what `assign` generates; the release holds no hidden checks or "
        "solution text; the solution scores the maximum; the student notebook scores 0 "
        "without engine errors; every example scores what examples/expected.toml says.",
        "convgrade validate assignments/week1 --junit validate.xml",
    )
    v.add_argument("assignment_dir", metavar="ASSIGNMENT_DIR", nargs="?")
    options.add(v, "junit")
    v.set_defaults(handler=cmd_validate)


def _add_gradescope(sub: Subparsers) -> None:
    s = _sub(
        sub,
        "gradescope",
        "instructors: build a Gradescope autograder zip",
        "Write a zip with setup.sh, run_autograder, convgrade's source and the assignment "
        "(hidden checks included; the solution notebook left out) to upload as a "
        "Gradescope programming assignment's autograder.",
        "convgrade gradescope assignments/week1 --out autograder.zip",
    )
    s.add_argument("assignment_dir", metavar="ASSIGNMENT_DIR")
    options.add(s, "autograder_out")
    s.set_defaults(handler=cmd_gradescope)


def _add_report(sub: Subparsers) -> None:
    r = _sub(
        sub,
        "report",
        "instructors: an HTML report of a graded class",
        "Write report.html for a folder written by `convgrade grade`: score histogram, "
        "pass rate per question, the most common failing checks, submissions not graded.",
        "convgrade report grades/",
    )
    r.add_argument("grades_dir", metavar="GRADES_DIR")
    options.add(r, "report_out")
    r.set_defaults(handler=cmd_report)


def run(argv: list[str] | None = None, out_stream=None, err_stream=None) -> int:
    """Run the command line in-process and return its exit code (used by tests)."""
    out_stream = out_stream or sys.stdout
    err_stream = err_stream or sys.stderr
    parser = build_parser()
    try:
        # argparse prints help and usage errors itself: send them to our streams.
        with contextlib.redirect_stdout(out_stream), contextlib.redirect_stderr(err_stream):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not getattr(args, "handler", None):
        parser.print_help(out_stream)
        return 2
    try:
        return args.handler(args, out_stream, err_stream)
    except StaffError as exc:
        err_stream.write(f"convgrade: error: {exc}\n")
        return exc.exit_code
    except ConvgradeError as exc:
        err_stream.write(f"convgrade: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        err_stream.write("convgrade: interrupted; results written so far are complete files\n")
        return 130
    except Exception:
        err_stream.write(
            "convgrade: internal error (a bug in convgrade, not in your files):\n"
            + traceback.format_exc()
        )
        return 3


def main() -> None:
    code = run()
    # Leave without the interpreter's teardown: with TensorFlow imported it took over a
    # second (measured), and by now every result file is written, closed and renamed.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream
            pass
    os._exit(code)
