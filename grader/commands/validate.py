"""``convgrade validate``: everything CI on an instructors' repo should insist on.

Each item is a named pass/fail with a message; the list renders as a table and as JUnit XML
(one test case per item), so CI shows exactly which promise broke.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.authoring import expected as expected_mod
from grader.authoring.assignment import Assignment
from grader.authoring.release import (
    grade_reference_notebooks,
    leaks,
    notebook_signature,
    reference_problems,
    release_members,
    student_notebook,
)
from grader.engine.pytest_plugin import CheckInfo, collect_checks
from grader.engine.submissions import Submission
from grader.errors import StaffError
from grader.outputs.writers import atomic_write


@dataclass(frozen=True)
class Item:
    name: str
    ok: bool
    message: str = ""


def validate(asg: Assignment) -> list[Item]:
    """Every promise of ``asg``, as one item each; stops at the first item others rest on."""
    collected = "checks collect, have points and questions, and add up"
    try:
        checks = collect_checks(asg)
    except StaffError as exc:
        return [Item(collected, False, str(exc))]
    items = [Item(collected, True, f"{len(checks)} checks")]
    try:
        generated = student_notebook(asg)
    except StaffError as exc:
        return items + [Item("student notebook can be generated", False, str(exc))]
    items.append(_committed_student(asg, generated))
    found = leaks(asg, release_members(asg, generated))
    items.append(
        Item("student release holds no hidden checks or solution text", not found, "\n".join(found))
    )
    return items + _graded_items(asg, checks, generated)


def _committed_student(asg: Assignment, generated: nbformat.NotebookNode) -> Item:
    committed_ok, message = False, f"{asg.student} is missing"
    if asg.student.is_file():
        committed = nbformat.read(asg.student, as_version=4)
        committed_ok = notebook_signature(committed) == notebook_signature(generated)
        message = (
            ""
            if committed_ok
            else (
                f"{asg.student} differs from what `convgrade assign` generates from "
                f"{asg.source.name}; regenerate it with `python -m grader.authoring.stubs "
                f"{asg.source} {asg.student}`"
            )
        )
    return Item("committed student.ipynb matches the source", committed_ok, message)


def _graded_items(
    asg: Assignment, checks: list[CheckInfo], generated: nbformat.NotebookNode
) -> list[Item]:
    """Grade the solution, the student notebook and every example; one item per promise."""
    expected = expected_mod.load(asg.examples_dir)
    notebooks = sorted(asg.examples_dir.glob("*.ipynb")) if asg.examples_dir.is_dir() else []
    examples = tuple(
        Submission(f"example:{nb.stem}", str(nb), nb) for nb in notebooks if nb.stem in expected
    )
    scores, example_results = grade_reference_notebooks(asg, checks, generated, extra=examples)
    problems = reference_problems(asg, scores)
    sol_problem = [p for p in problems if p.startswith("the solution")]
    tpl_problem = [p for p in problems if not p.startswith("the solution")]
    items = [
        Item(
            "solution scores the maximum",
            not sol_problem,
            "\n".join(sol_problem) or f"{scores.solution.score:g}/{asg.max_score:g}",
        ),
        Item(
            "student notebook scores 0 without engine errors",
            not tpl_problem,
            "\n".join(tpl_problem) or f"{scores.template.score:g} ({scores.template.status})",
        ),
    ]
    missing = [nb.stem for nb in notebooks if nb.stem not in expected]
    if missing:
        where = asg.examples_dir / "expected.toml"
        items.append(
            Item(
                "every example has an expected score",
                False,
                f"no entry in {where} for: " + ", ".join(missing),
            )
        )
    for res in example_results:
        stem = res.submission.removeprefix("example:")
        want = expected[stem]
        problems = want.problems(res)
        items.append(Item(f"example {stem} {want.describe()}", not problems, "\n".join(problems)))
    return items


def junit_xml(items: list[Item], suite: str) -> str:
    failures = sum(not i.ok for i in items)
    root = ET.Element(
        "testsuite", name=suite, tests=str(len(items)), failures=str(failures), errors="0"
    )
    for item in items:
        case = ET.SubElement(root, "testcase", classname=suite, name=item.name)
        if not item.ok:
            fail = ET.SubElement(
                case,
                "failure",
                message=item.message.splitlines()[0][:200] if item.message else "failed",
            )
            fail.text = item.message
        elif item.message:
            ET.SubElement(case, "system-out").text = item.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, items: list[Item], suite: str) -> None:
    atomic_write(path, junit_xml(items, suite))
