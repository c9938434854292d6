"""The registry of output formats, and reused results whose files are missing.

Fast: the registry and the writers in this process; then the real batch (the mini
assignment's checks through pytest) against the fake workers of tests/test_batch_guard.py,
graded once and run again as ``convgrade grade`` does without ``--force``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_batch_guard import CORR2D, SCALE, ExecLauncher, write_nb
from test_writers import graded_result

from grader.authoring import assignment as assignment_mod
from grader.engine.batch import Progress, grade_batch
from grader.engine.grading import GradeOptions
from grader.engine.pytest_plugin import collect_checks
from grader.engine.session import Timeouts
from grader.engine.submissions import Submission
from grader.errors import GraderBug
from grader.outputs import renderers, writers
from grader.outputs.renderers import BatchInput, BatchRenderer, SubmissionInput, SubmissionRenderer
from grader.outputs.results import SubmissionResult


class ScoreLine(SubmissionRenderer):
    """A format the writers did not know when the results were graded."""

    file_name = "score.txt"

    def render(self, item: SubmissionInput) -> str:
        r = item.result
        return f"{r.submission}: {r.score:g} / {r.max_score:g} ({item.title})\n"


class ScoreBytes(SubmissionRenderer):
    file_name = "score.bin"

    def render(self, item: SubmissionInput) -> bytes:
        return bytes([int(item.result.score), int(item.result.max_score)])


class Broken(SubmissionRenderer):
    file_name = "broken.txt"

    def render(self, item: SubmissionInput) -> str:
        raise ValueError("this format has a bug")


class Roster(BatchRenderer):
    file_name = "roster.txt"

    def render(self, batch: BatchInput) -> str:
        return "".join(f"{r.submission}\n" for r in batch.results)


@contextmanager
def registered(*classes: type[SubmissionRenderer] | type[BatchRenderer]) -> Iterator[None]:
    for cls in classes:
        renderers.register(cls)
    try:
        yield
    finally:
        for cls in classes:
            renderers.unregister(cls)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- the registry ------------------------------------------------------------------------------


def test_the_built_in_formats_are_registered_in_writing_order():
    assert [r.file_name for r in renderers.submission_renderers()] == [
        "result.json",
        "feedback.md",
        "results.json",
        "executed.ipynb",
    ]
    assert [r.file_name for r in renderers.batch_renderers()] == [
        "grades.csv",
        "submissions.csv",
        "manual.csv",
    ]


def test_two_formats_cannot_write_the_same_file():
    class OtherFeedback(SubmissionRenderer):
        file_name = "feedback.md"

        def render(self, item: SubmissionInput) -> str:
            return ""

    with pytest.raises(
        GraderBug, match=r"FeedbackMarkdown and OtherFeedback both write 'feedback.md'"
    ):
        renderers.register(OtherFeedback)
    assert "feedback.md" in [r.file_name for r in renderers.submission_renderers()]


@pytest.mark.parametrize("name", ["", "..", "sub/feedback.md", "..\\grades.csv"])
def test_a_format_needs_a_plain_file_name(name):
    cls = type("Misnamed", (ScoreLine,), {"file_name": name})

    with pytest.raises(GraderBug, match=r"Misnamed needs a plain file name; got file_name="):
        renderers.register(cls)


def test_only_renderers_can_be_registered():
    with pytest.raises(GraderBug, match=r"neither a SubmissionRenderer nor a BatchRenderer"):
        renderers.register(dict)  # type: ignore[type-var]


def test_a_registered_format_is_written_until_it_is_unregistered(tmp_path):
    result = graded_result(tmp_path)
    with registered(ScoreLine, Roster):
        writers.write_submission(tmp_path / "a", result, None, "Mini")
        writers.write_summary(tmp_path / "a", [result], ("corr2d", "layer"))
    writers.write_submission(tmp_path / "b", result, None, "Mini")
    writers.write_summary(tmp_path / "b", [result], ("corr2d", "layer"))

    assert (tmp_path / "a" / "alice" / "score.txt").read_text() == "alice: 3 / 5 (Mini)\n"
    assert (tmp_path / "a" / "roster.txt").read_text() == "alice\n"
    assert not (tmp_path / "b" / "alice" / "score.txt").exists()
    assert not (tmp_path / "b" / "roster.txt").exists()


def test_a_format_may_render_bytes(tmp_path):
    with registered(ScoreBytes):
        writers.write_submission(tmp_path, graded_result(tmp_path), None)

    assert (tmp_path / "alice" / "score.bin").read_bytes() == b"\x03\x05"


# --- writers.reusable ----------------------------------------------------------------------------


def stored(tmp_path: Path) -> tuple[Path, SubmissionResult]:
    out = tmp_path / "out"
    result = graded_result(tmp_path)
    writers.write_submission(out, result, None, "Mini")
    return out, result


def test_a_stored_result_of_other_inputs_is_not_reused(tmp_path):
    out, result = stored(tmp_path)

    assert writers.reusable(out, "alice", "another fingerprint", "Mini") is None
    assert writers.reusable(out, "nobody", result.fingerprint, "Mini") is None


def test_a_reused_result_gets_its_missing_file_back_and_nothing_else_rewritten(tmp_path):
    out, result = stored(tmp_path)
    before = contents(out / "alice")
    (out / "alice" / "feedback.md").unlink()
    (out / "alice" / "results.json").write_text("kept as it is\n")

    assert writers.reusable(out, "alice", result.fingerprint, "Mini") == result

    after = contents(out / "alice")
    assert after["feedback.md"] == before["feedback.md"]
    assert after["results.json"] == b"kept as it is\n"  # present, so not rendered again
    assert sorted(after) == sorted(before)


def test_a_missing_executed_notebook_stays_missing(tmp_path):
    # result.json does not hold the run notebook, so only a new run can write it again.
    out, result = stored(tmp_path)

    assert writers.reusable(out, "alice", result.fingerprint, "Mini") == result
    assert not (out / "alice" / "executed.ipynb").exists()


def test_a_result_whose_missing_file_cannot_be_rendered_is_not_reused(tmp_path):
    out, result = stored(tmp_path)

    with registered(Broken):
        assert writers.reusable(out, "alice", result.fingerprint, "Mini") is None
    assert not (out / "alice" / "broken.txt").exists()


# --- a re-run of the batch -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini(mini_assignment):
    asg = assignment_mod.load(mini_assignment)
    return asg, collect_checks(asg)


OPTIONS = GradeOptions(timeouts=Timeouts(cell=10, notebook=30, call=5))


def alice(tmp_path: Path) -> list[Submission]:
    path = tmp_path / "alice.ipynb"
    if not path.exists():
        write_nb(path, CORR2D, SCALE)
    return [Submission("alice", str(path), path)]


def grade_again(tmp_path: Path, mini) -> tuple[dict[str, Progress], Path]:
    """Grade alice's full-marks notebook into tmp_path/out, reusing what is there."""
    asg, checks = mini
    out = tmp_path / "out"
    options = OPTIONS
    progress: list[Progress] = []
    launcher = ExecLauncher()
    try:
        subs = alice(tmp_path)
        grade_batch(
            subs, asg, checks, launcher, options, out, reuse=True, on_progress=progress.append
        )
    finally:
        launcher.close()
    return {p.result.submission: p for p in progress}, out


def test_a_deleted_feedback_file_is_back_and_identical_after_a_rerun(tmp_path, mini):
    first, out = grade_again(tmp_path, mini)
    assert not first["alice"].reused and first["alice"].result.score == 5
    before = contents(out / "alice")
    (out / "alice" / "feedback.md").unlink()

    second, out = grade_again(tmp_path, mini)

    assert second["alice"].reused
    assert contents(out / "alice") == before


def test_a_format_registered_after_grading_is_written_for_a_reused_result(tmp_path, mini):
    first, out = grade_again(tmp_path, mini)
    assert not (out / "alice" / "score.txt").exists()

    with registered(ScoreLine):
        second, out = grade_again(tmp_path, mini)

    assert second["alice"].reused
    assert (out / "alice" / "score.txt").read_text() == "alice: 5 / 5 (Mini corr2d)\n"


def test_a_format_that_fails_on_a_reused_result_regrades_it_and_says_so(tmp_path, mini):
    grade_again(tmp_path, mini)

    with registered(Broken):
        second, out = grade_again(tmp_path, mini)

    assert not second["alice"].reused
    assert second["alice"].result.status == "grader_error"
    assert "this format has a bug" in second["alice"].result.staff_details


def test_the_cluster_client_renders_the_missing_files_of_reused_results_too(tmp_path, mini):
    pytest.importorskip("distributed")
    from grader.cluster.dask_client import grade_on_cluster

    _, out = grade_again(tmp_path, mini)
    before = contents(out / "alice")
    (out / "alice" / "feedback.md").unlink()
    progress: list[Progress] = []

    # Everything is reused, so no scheduler is needed: nothing listens at this address.
    asg, checks = mini
    grade_on_cluster(
        "tcp://127.0.0.1:9",
        alice(tmp_path),
        asg,
        checks,
        OPTIONS,
        out,
        512,
        "auto",
        on_progress=progress.append,
    )

    assert [p.reused for p in progress] == [True]
    assert contents(out / "alice") == before
