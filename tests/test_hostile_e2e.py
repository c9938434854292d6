"""End-to-end: hostile notebooks, in real sandboxed workers, against the real CLI.

Each notebook in tests/fixtures/hostile (written by make_hostile_fixtures.py) attacks the
trusted side from inside its worker: it drips a frame, floods, forges a reply, prints a lone
surrogate, injects markup, names itself like a report, runs a shell. Two classmates with
correct notebooks are graded in the same batch. The batch runs as a separate process (so a
regression that hangs it fails here instead of hanging the test run, and so its peak memory
can be read), once with ``--jobs 1`` and once with ``--jobs 2``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from grader.commands.cli import run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
GIB = 1024 * 1024 * 1024

# Runs the CLI and reports its own peak RSS and the largest of its children's (with
# --jobs 2 the checks run in forked grading processes: those are children). Its own peak is
# VmHWM, not getrusage's ru_maxrss: that survives exec, so it would start at the RSS of the
# pytest process that started the runner (over 1 GiB late in the full suite).
_RUNNER = """
import re, resource, sys
from grader.commands.cli import run
code = run(sys.argv[1:], sys.stdout, sys.stderr)
with open("/proc/self/status") as status:
    self_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"PEAK-RSS {self_kib * 1024} {children_kib * 1024}")
sys.exit(code)
"""


@pytest.fixture(scope="module", params=[1, 2], ids=["jobs-1", "jobs-2"])
def batch(request, tmp_path_factory, engine_notebooks, mini_assignment):
    jobs = request.param
    subs = tmp_path_factory.mktemp("hostile-subs")
    for notebook in HOSTILE.glob("*.ipynb"):
        shutil.copy(notebook, subs / notebook.name)
    shutil.copy(engine_notebooks / "good.ipynb", subs / "good.ipynb")
    shutil.copy(engine_notebooks / "good.ipynb", subs / "classmate.ipynb")
    out = tmp_path_factory.mktemp("hostile-out")
    args = ["grade", str(subs), "-a", str(mini_assignment), "--out", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, *args, "--jobs", str(jobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # a batch that hangs fails here
    )
    wall = time.monotonic() - started
    peak = next(line for line in proc.stdout.splitlines() if line.startswith("PEAK-RSS"))
    self_rss, children_rss = (int(x) for x in peak.split()[1:])
    with open(out / "grades.csv", newline="") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    return {
        "jobs": jobs,
        "code": proc.returncode,
        "stderr": proc.stderr,
        "out": out,
        "rows": rows,
        "wall": wall,
        "self_rss": self_rss,
        "children_rss": children_rss,
    }


def result(batch, sub_id: str) -> dict:
    return json.loads((batch["out"] / sub_id / "result.json").read_text(encoding="utf-8"))


def test_the_batch_ends_with_every_row_and_an_honest_exit_code(batch):
    expected = {p.stem for p in HOSTILE.glob("*.ipynb")} - {"report.html"}
    expected |= {"report.html-2", "good", "classmate"}

    assert set(batch["rows"]) == expected
    # Every notebook was graded (some stopped by a limit): nothing is "not graded".
    assert batch["code"] == 0, batch["stderr"][-2000:]
    assert all(r["status"] != "grader_error" for r in batch["rows"].values())


def test_correct_classmates_keep_full_marks(batch):
    assert batch["rows"]["good"]["score"] == "5"
    assert batch["rows"]["classmate"]["score"] == "5"


def test_a_frame_dripped_byte_by_byte_is_cut_at_the_cell_timeout(batch):
    # The cell writes a header promising 1 MB, then one byte every 4 s, ignoring SIGINT.
    r = result(batch, "hang_drip")

    assert r["status"] == "timeout"
    assert batch["rows"]["hang_drip"]["score"] == "5"  # the cells after it were replayed
    assert any("did not finish within 8 s and ignored the interrupt" in e for e in r["errors"])
    assert r["execution"]["duration"] < 8 + 2 + 6  # cell timeout, grace, the other cells


def test_the_trusted_side_stays_under_1_gib_while_workers_flood(batch):
    # Measured before the fix, flood_many alone with --jobs 1: 2245 MiB, executed.ipynb 760 MB.
    if batch["jobs"] == 1:
        assert batch["self_rss"] < GIB
    else:  # the grading processes are children; so are the zygote and its workers
        assert batch["children_rss"] < GIB
        assert batch["self_rss"] < GIB


def test_outputs_kept_per_notebook_are_bounded_under_a_flood(batch):
    # 400 cells answer with 1.9 MB each (760 MB), under the per-reply cap.
    r = result(batch, "flood_many")
    executed = batch["out"] / "flood_many" / "executed.ipynb"

    assert executed.stat().st_size <= 20 * 10**6
    assert any("were not kept: a notebook keeps at most 8 MiB" in e for e in r["errors"])
    assert batch["rows"]["flood_many"]["score"] == "5"


def test_a_forged_reply_of_7_9_mb_stops_the_worker_with_a_reason(batch):
    r = result(batch, "flood_forged")
    executed = batch["out"] / "flood_forged" / "executed.ipynb"

    assert executed.stat().st_size <= 20 * 10**6
    assert any("broke the protocol" in e for e in r["errors"])
    assert r["status"] == "crashed"  # its worker kept dying: not a timeout
    assert r["execution"]["restarts"] == 3  # then it gave up, quickly
    assert r["execution"]["duration"] < 30


def test_a_full_marks_notebook_that_prints_a_lone_surrogate_keeps_its_score(batch):
    r = result(batch, "surrogate")
    executed = nbformat.read(batch["out"] / "surrogate" / "executed.ipynb", as_version=4)

    assert (r["status"], batch["rows"]["surrogate"]["score"]) == ("graded", "5")
    texts = [o.get("text", "") for c in executed.cells for o in c.get("outputs", [])]
    assert "a lone surrogate: \ufffd\n" in texts


def test_a_forged_array_in_an_output_costs_that_cell_only(batch):
    r = result(batch, "forged_array")

    assert (r["status"], batch["rows"]["forged_array"]["score"]) == ("crashed", "5")
    assert any("'text' must be text, got ndarray" in e for e in r["errors"])


def test_feedback_keeps_its_structure_against_markup_in_an_exception(batch):
    markdown_it = pytest.importorskip("markdown_it")
    text = (batch["out"] / "injection" / "feedback.md").read_text(encoding="utf-8")
    html = markdown_it.MarkdownIt("commonmark").render(text)

    assert html.count("<h1>") == 1 and html.count("<h2>") == 2
    assert html.count("<strong>Score:") == 1 and "<strong>Score: 5 / 5</strong>" in html
    assert "<script" not in html and "<!--" not in html
    assert html.count("<strong>passed</strong>") == 4  # the four real checks, nothing forged


def test_manual_csv_never_holds_a_formula(batch):
    with open(batch["out"] / "manual.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    (row,) = [r for r in rows if r["submission"] == "injection"]
    assert row["text"].startswith("'=HYPERLINK(")
    assert row["text"].endswith("\ufffd")  # the lone surrogate in the notebook file


def test_a_submission_named_like_the_report_does_not_break_it(batch):
    assert not (batch["out"] / "report.html").exists()
    assert batch["rows"]["report.html-2"]["score"] == "5"

    code = run(["report", str(batch["out"])], io.StringIO(), io.StringIO())

    assert code == 0
    assert (batch["out"] / "report.html").is_file()


def test_every_shell_path_is_refused_and_reported(batch):
    r = result(batch, "shell")

    assert r["execution"]["shell_commands"] == ["%%bash: echo SHELL-RAN", "echo SHELL-RAN"]
    assert batch["rows"]["shell"]["score"] == "5"
    executed = nbformat.read(batch["out"] / "shell" / "executed.ipynb", as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    lines = [line for o in outputs for line in o.get("text", "").splitlines()]
    assert "SHELL-RAN" not in lines  # what echo would have printed
    assert sum("shell command not run under grading" in line for line in lines) == 2
