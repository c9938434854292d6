"""The class report: numbers from a grades folder, a self-contained page, escaped student text.

The grades folder is written by the real writers from realistic results of the mini
assignment (no grading, so these tests are fast). The browser tests open the page in
headless Chromium: one takes a screenshot with the command-line flags CI uses and checks
it is not blank; the other drives Chromium over its DevTools pipe (stdlib only) and checks
that the page logs no console errors and that every embedded plot decodes.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.errors import StaffError
from grader.outputs import writers
from grader.outputs.report import build_report, load_rows, summarize
from grader.outputs.results import CheckResult, Execution, SubmissionResult

EVIL = "<script>alert('pwned')</script>"
# (name, question, points, visibility) of the mini assignment's checks
CHECKS = (
    ("corr2d on a 3x3 example", "corr2d", 1.0, "visible"),
    ("corr2d on random non-square inputs", "corr2d", 2.0, "hidden"),
    ("Scale(k)(x) multiplies by k", "layer", 1.0, "hidden"),
    ("Scale keeps its factor in .factor", "layer", 1.0, "hidden"),
)
QUESTIONS = (("corr2d", 3.0), ("layer", 2.0))
NONE = "Scale(2)(x) returned None, expected an array"
WRONG = "corr2d(X, K) is wrong at index (0, 0): got 5, expected 19 (4 of 4 entries differ)"


def _result(
    sub: str, failing: dict[str, str], status: str = "graded", errors=()
) -> SubmissionResult:
    """A result as grading would make it; ``failing`` maps check name -> its message."""
    tests = tuple(
        CheckResult(
            name=name,
            question=q,
            score=0.0 if name in failing else pts,
            max_score=pts,
            status="failed" if name in failing else "passed",
            message=failing.get(name, ""),
            visibility=vis,
            nodeid=f"checks/{vis}/test_{q}.py::{name}",
        )
        for name, q, pts, vis in CHECKS
    )
    questions = tuple((q, sum(t.score for t in tests if t.question == q), m) for q, m in QUESTIONS)
    return SubmissionResult(
        submission=sub,
        source=f"class/{sub}.ipynb",
        score=sum(t.score for t in tests),
        max_score=5.0,
        status=status,
        tests=tests,
        errors=tuple(errors),
        execution=Execution(duration=0.8, checks_duration=0.4, isolation="sandboxed (bubblewrap)"),
        questions=questions,
        answers=(("corr2d", "I slide the kernel over the image."),),
    )


def _not_graded(sub: str, status: str, message: str) -> SubmissionResult:
    msg = f"not graded: {message}"
    return _result(sub, {name: msg for name, *_ in CHECKS}, status, (message,))


def _write_grades(out: Path, results: list[SubmissionResult]) -> Path:
    for r in results:
        writers.write_submission(out, r, None, "Mini corr2d")
    writers.write_summary(out, results, tuple(q for q, _ in QUESTIONS))
    return out


@pytest.fixture(scope="module")
def grades(tmp_path_factory) -> Path:
    timeout = "cell 2 was stopped: it ran longer than 5 s"
    results = [
        _result("alice", {}),
        _result("bob", {}),
        _result("carol", {CHECKS[0][0]: WRONG, CHECKS[1][0]: WRONG}),
        _result("dave", {CHECKS[0][0]: WRONG, CHECKS[1][0]: WRONG, CHECKS[2][0]: NONE}),
        _result("erin", {CHECKS[2][0]: NONE}, "timeout", (timeout,)),
        _not_graded("frank", "not_notebook", "frank.ipynb is not a notebook (not JSON)"),
        _result(f"evil{EVIL[:8]}", {CHECKS[3][0]: EVIL}),
        _not_graded(f"mallory{EVIL[:8]}", "wrong_kernel", f"kernel is {EVIL}"),
    ]
    return _write_grades(tmp_path_factory.mktemp("grades"), results)


def test_summary_counts_scores_and_reasons(grades):
    s = summarize(grades, *load_rows(grades))
    assert s.total == 8
    assert s.statuses == {"graded": 5, "not_notebook": 1, "timeout": 1, "wrong_kernel": 1}
    # not-graded submissions are listed, not averaged in; a timeout still counts
    assert sorted(s.scores) == [1.0, 2.0, 4.0, 4.0, 5.0, 5.0]
    assert [(sub, st) for sub, st, _ in s.not_graded] == [
        ("frank", "not_notebook"),
        (f"mallory{EVIL[:8]}", "wrong_kernel"),
    ]
    assert "not a notebook" in s.not_graded[0][2]
    assert s.hit_limits == (("erin", "timeout", "cell 2 was stopped: it ran longer than 5 s"),)
    assert s.manual_answers == 8


def test_summary_ranks_failing_checks_and_question_rates(grades):
    s = summarize(grades, *load_rows(grades))
    top = s.failing[0]
    assert (top.name, top.failed, top.seen, top.typical_message) == (CHECKS[0][0], 2, 6, WRONG)
    assert [(f.name, f.failed) for f in s.failing][-1] == (CHECKS[3][0], 1)
    assert [f.failed for f in s.failing] == sorted((f.failed for f in s.failing), reverse=True)
    corr2d, layer = s.questions
    assert (corr2d.question, corr2d.max_score, corr2d.full_marks) == ("corr2d", 3.0, 4 / 6)
    assert layer.mean == pytest.approx((2 + 2 + 2 + 1 + 1 + 1) / 6)


def test_report_is_written_atomically_where_asked(grades, tmp_path):
    default = build_report(grades)
    assert default == grades / "report.html"
    custom = build_report(grades, tmp_path / "elsewhere" / "class.html")
    assert custom.read_text() == default.read_text()
    assert not [p for p in grades.iterdir() if p.name.startswith(".report.html")]


def test_report_is_self_contained(grades):
    page = build_report(grades).read_text()
    assert page.count("src='data:image/png;base64,") == 2
    for needle in ("http://", "https://", "<script", "<link rel='stylesheet'"):
        assert needle not in page
    for text in ("Most common failing checks", "Not graded", "frank", "not_notebook", WRONG):
        assert text in page


def test_student_text_is_escaped(grades):
    page = build_report(grades).read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page  # a check message
    assert "kernel is &lt;script&gt;" in page  # a not-graded reason
    assert "mallory&lt;script&gt;" in page  # a submission id


def test_missing_grades_csv_is_a_staff_error(tmp_path):
    with pytest.raises(StaffError, match="no grades.csv.*convgrade grade"):
        build_report(tmp_path)


def test_grades_csv_without_result_files_still_reports(tmp_path):
    (tmp_path / "grades.csv").write_text(
        "submission,score,max_score,status,corr2d,layer\n"
        "a,5,5,graded,3,2\nb,2,5,graded,0,2\n../../etc,1,5,graded,1,0\n"
    )
    s = summarize(tmp_path, *load_rows(tmp_path))
    assert s.missing_results == ("a", "b", "../../etc")
    assert [(q.question, q.max_score) for q in s.questions] == [("corr2d", 3.0), ("layer", 2.0)]
    assert "without result.json" in build_report(tmp_path).read_text()


def test_foreign_csv_is_a_staff_error(tmp_path):
    (tmp_path / "grades.csv").write_text("name,points\nalice,3\n")
    with pytest.raises(StaffError, match="columns must start with submission, score"):
        build_report(tmp_path)


# ---------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = next(
        (p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))),
        None,
    )
    if exe is None:
        if os.geteuid() != 0:
            pytest.skip("chromium is not installed and installing it needs root")
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does)")
    return exe


@pytest.mark.slow
def test_screenshot_is_not_blank(grades, chromium, tmp_path):
    page = build_report(grades)
    png = tmp_path / "report.png"
    proc = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert png.is_file(), proc.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (1600, 1200)
    non_white = (pixels < 0.9).any(axis=-1).mean()
    assert non_white > 0.02, f"only {non_white:.2%} of the screenshot is not white"
    # the histogram's bars (#3b6fb6) are on screen: the embedded PNGs were drawn
    bar_blue = (abs(pixels - [0x3B / 255, 0x6F / 255, 0xB6 / 255]) < 0.05).all(axis=-1)
    assert bar_blue.sum() > 2000


def _fd_above(fd: int, minimum: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)
    os.close(fd)
    return high


class DevTools:
    """Just enough of the Chrome DevTools Protocol over ``--remote-debugging-pipe``.

    Chromium reads NUL-terminated JSON commands from fd 3 and writes replies and events to
    fd 4, so no websocket library is needed.
    """

    def __init__(self, chromium: str, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()
        # The child's ends are moved above fd 4 first, so placing them on 3 and 4 cannot
        # overwrite one with the other; a tiny Python trampoline does the placing.
        cmd_r, evt_w = (_fd_above(fd, 10) for fd in (cmd_r, evt_w))
        trampoline = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.execvp(sys.argv[3], sys.argv[3:])"
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                trampoline,
                str(cmd_r),
                str(evt_w),
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(cmd_r, evt_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, timeout: float = 60) -> dict:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._evt_r], [], [], timeout)
            assert ready, "no answer from Chromium within 60 s"
            chunk = os.read(self._evt_r, 1 << 16)
            assert chunk, "Chromium closed the DevTools pipe"
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            os.write(self._cmd_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._evt_r)


@pytest.mark.slow
def test_page_has_no_console_errors_and_plots_decode(grades, chromium, tmp_path):
    page = build_report(grades)
    browser = DevTools(chromium, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        probe = browser.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify({title: document.title, images: "
                "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),"
                " text: document.body.innerText})",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
    finally:
        browser.close()
    dom = json.loads(probe)
    errors = [
        e
        for e in browser.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert errors == []
    assert len(dom["images"]) == 2
    assert all(done and w > 300 and h > 100 for done, w, h in dom["images"]), dom["images"]
    assert dom["title"].startswith("convgrade report")
    assert f"mallory{EVIL[:8]}" in dom["text"]  # shown as text, not run as markup
