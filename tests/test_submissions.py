"""Collecting PATHs into submissions: folders, zips extracted safely, unique stable ids."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from grader.engine import submissions
from grader.engine.submissions import collect
from grader.errors import StaffError

# --- helpers -------------------------------------------------------------------------------


def touch(path: Path, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_zip(path: Path, members: dict[str, str | bytes | zipfile.ZipInfo]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def symlink_member(name: str, target: str) -> tuple[zipfile.ZipInfo, str]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def table(subs) -> list[tuple[str, str | None]]:
    """(id, problem status or None) per submission: what grades.csv will show."""
    return [(s.id, s.problem.status if s.problem else None) for s in subs]


# --- single files and folders --------------------------------------------------------------


def test_a_notebook_path_is_one_submission_named_after_its_stem(tmp_path):
    nb = touch(tmp_path / "alice_hw1.ipynb")

    (sub,) = collect([nb], tmp_path / "extract")

    assert sub.id == "alice_hw1"
    assert sub.path == nb
    assert sub.origin == str(nb)
    assert sub.problem is None


def test_a_folder_is_searched_recursively_and_checkpoints_are_skipped(tmp_path):
    root = tmp_path / "class"
    touch(root / "alice.ipynb")
    touch(root / "section-b" / "bob.ipynb")
    touch(root / "section-b" / "deep" / "carol.ipynb")
    touch(root / ".ipynb_checkpoints" / "alice-checkpoint.ipynb")
    touch(root / "section-b" / ".ipynb_checkpoints" / "bob-checkpoint.ipynb")
    touch(root / "__MACOSX" / "._alice.ipynb")
    touch(root / "notes.txt")
    touch(root / "data.ipynb.bak")
    (root / "folder.ipynb").mkdir()  # a folder is not a notebook, whatever its name

    subs = collect([root], tmp_path / "extract")

    assert table(subs) == [("alice", None), ("bob", None), ("carol", None)]
    assert [s.path for s in subs] == [
        root / "alice.ipynb",
        root / "section-b" / "bob.ipynb",
        root / "section-b" / "deep" / "carol.ipynb",
    ]


def test_ids_are_cleaned_of_characters_that_do_not_belong_in_a_folder_name(tmp_path):
    root = tmp_path / "class"
    touch(root / "Alice Smith (1).ipynb")
    touch(root / "bob's hw#2.ipynb")
    touch(root / "___.ipynb")

    assert [s.id for s in collect([root], tmp_path / "x")] == [
        "Alice_Smith_1",
        "bob_s_hw_2",
        "submission",
    ]


def test_a_symlink_pointing_outside_the_folder_is_unsafe_and_not_read(tmp_path):
    root = tmp_path / "class"
    touch(root / "alice.ipynb")
    secret = touch(tmp_path / "outside" / "secret.ipynb", '{"secret": true}')
    (root / "mallory.ipynb").symlink_to(secret)
    (root / "dangling.ipynb").symlink_to(tmp_path / "nowhere" / "missing.ipynb")

    subs = {s.id: s for s in collect([root], tmp_path / "extract")}

    assert table(subs.values()) == [
        ("alice", None),
        ("dangling", "unsafe_path"),
        ("mallory", "unsafe_path"),
    ]
    assert subs["mallory"].path is None  # nothing will ever open it
    assert "link to a file outside the submission folder" in subs["mallory"].problem.message
    assert "mallory.ipynb" in subs["mallory"].problem.message


def test_a_symlink_inside_the_folder_is_followed(tmp_path):
    root = tmp_path / "class"
    real = touch(root / "drafts" / "final.ipynb")
    (root / "alice.ipynb").symlink_to(real)

    subs = {s.id: s for s in collect([root], tmp_path / "extract")}

    assert table(subs.values()) == [("alice", None), ("final", None)]
    assert subs["alice"].path.resolve() == real.resolve()


def test_a_symlinked_folder_pointing_outside_is_never_read(tmp_path):
    root = tmp_path / "class"
    touch(root / "alice.ipynb")
    touch(tmp_path / "outside" / "secret.ipynb")
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)

    subs = collect([root], tmp_path / "extract")

    outside = (tmp_path / "outside").resolve()
    for sub in subs:
        assert sub.path is None or outside not in sub.path.resolve().parents


def test_a_missing_path_is_a_staff_error(tmp_path):
    with pytest.raises(StaffError, match=r"nope\.ipynb does not exist\. Give \.ipynb files"):
        collect([tmp_path / "nope.ipynb"], tmp_path / "extract")


def test_a_path_that_is_not_a_notebook_folder_or_zip_is_a_staff_error(tmp_path):
    path = touch(tmp_path / "answers.pdf")

    with pytest.raises(StaffError, match=r"answers\.pdf is not a notebook \(\.ipynb\), a folder"):
        collect([path], tmp_path / "extract")


def test_an_empty_folder_gives_no_submissions(tmp_path):
    (tmp_path / "empty").mkdir()

    assert collect([tmp_path / "empty"], tmp_path / "extract") == []


# --- duplicate ids -------------------------------------------------------------------------


def test_duplicate_stems_get_a_deterministic_suffix(tmp_path):
    a = touch(tmp_path / "section-a" / "hw.ipynb")
    b = touch(tmp_path / "section-b" / "hw.ipynb")
    c = touch(tmp_path / "section-c" / "hw.ipynb")

    subs = collect([c, a, b], tmp_path / "extract")

    # Ordered by origin, whatever order the PATHs were given in.
    assert [(s.id, s.path) for s in subs] == [("hw", a), ("hw-2", b), ("hw-3", c)]


def test_ids_are_stable_across_runs_and_argument_orders(tmp_path):
    paths = [
        touch(tmp_path / "a" / "hw.ipynb"),
        touch(tmp_path / "b" / "hw.ipynb"),
        make_zip(tmp_path / "z" / "hw.zip", {"hw.ipynb": "{}"}),
        touch(tmp_path / "c" / "hw-2.ipynb"),
    ]

    runs = [
        [(s.id, s.origin) for s in collect(order, tmp_path / f"extract-{i}")]
        for i, order in enumerate([paths, paths[::-1], paths])
    ]

    assert runs[0] == runs[1] == runs[2]
    ids = [sub_id for sub_id, _ in runs[0]]
    assert len(ids) == len(set(ids))


def test_a_suffixed_id_never_collides_with_another_submissions_own_id(tmp_path):
    a = touch(tmp_path / "a" / "hw.ipynb")
    b = touch(tmp_path / "b" / "hw.ipynb")
    own = touch(tmp_path / "c" / "hw-2.ipynb")

    subs = {s.path: s.id for s in collect([a, b, own], tmp_path / "extract")}

    assert subs == {a: "hw", own: "hw-2", b: "hw-3"}


def test_ids_never_clash_with_the_summary_files_in_the_out_folder(tmp_path):
    nb = touch(tmp_path / "grades.csv.ipynb")  # would become the folder out/grades.csv

    (sub,) = collect([nb], tmp_path / "extract")

    assert sub.id not in {"grades.csv", "submissions.csv", "manual.csv"}
    assert sub.id == "grades.csv-2"


# --- zip archives --------------------------------------------------------------------------


def test_a_zip_is_extracted_and_members_are_named_by_their_path(tmp_path):
    archive = make_zip(
        tmp_path / "class.zip",
        {
            "alice/hw1.ipynb": '{"who": "alice"}',
            "bob.ipynb": '{"who": "bob"}',
            "README.txt": "not a notebook",
            "alice/.ipynb_checkpoints/hw1-checkpoint.ipynb": "{}",
            "__MACOSX/alice/._hw1.ipynb": "resource fork",
        },
    )

    subs = collect([archive], tmp_path / "extract")

    assert table(subs) == [("alice_hw1", None), ("bob", None)]
    assert [s.origin for s in subs] == [f"{archive}:alice/hw1.ipynb", f"{archive}:bob.ipynb"]
    assert subs[0].path.read_text() == '{"who": "alice"}'
    assert subs[1].path.read_text() == '{"who": "bob"}'
    for sub in subs:
        assert (tmp_path / "extract") in sub.path.parents


UNSAFE_NAMES = {
    "parent": "../evil.ipynb",
    "grandparent": "../../evil.ipynb",
    "parent-in-the-middle": "alice/../../evil.ipynb",
    "backslash-parent": "..\\evil.ipynb",
    "drive-letter": "C:/evil.ipynb",
}


@pytest.mark.parametrize("name", UNSAFE_NAMES.values(), ids=UNSAFE_NAMES.keys())
def test_zip_entries_that_escape_are_reported_and_not_written(tmp_path, name):
    before = files_under(tmp_path)
    archive = make_zip(tmp_path / "in" / "class.zip", {name: "EVIL", "good.ipynb": "{}"})

    subs = collect([archive], tmp_path / "in" / "extract")

    statuses = {s.origin.split(":", 1)[1]: s for s in subs}
    bad = statuses[name]
    assert bad.problem.status == "unsafe_path"
    assert bad.path is None
    assert "points outside the archive; it was not extracted" in bad.problem.message
    good = statuses["good.ipynb"]
    assert good.problem is None and good.path.read_text() == "{}"
    # Nothing was written anywhere but inside the extraction folder.
    written = files_under(tmp_path) - before
    assert {w for w in written if not w.startswith("in/extract/")} == {"in/class.zip"}
    assert not any("EVIL" in (tmp_path / w).read_text() for w in written if w.endswith(".ipynb"))


def test_an_absolute_zip_entry_is_reported_and_not_written(tmp_path):
    target = tmp_path / "victim" / "evil.ipynb"
    archive = make_zip(tmp_path / "class.zip", {str(target): "EVIL", "good.ipynb": "{}"})
    assert zipfile.ZipFile(archive).namelist()[0].startswith("/")

    subs = collect([archive], tmp_path / "extract")

    by_name = {s.origin.split(":", 1)[1]: s for s in subs}
    assert by_name[str(target)].problem.status == "unsafe_path"
    assert by_name["good.ipynb"].problem is None
    assert not target.exists()
    assert not (tmp_path / "victim").exists()


def test_a_symlink_in_a_zip_is_reported_and_not_extracted(tmp_path):
    info, target = symlink_member("link.ipynb", "/etc/passwd")
    buf = tmp_path / "class.zip"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, target)
        zf.writestr("good.ipynb", "{}")

    subs = {s.id: s for s in collect([buf], tmp_path / "extract")}

    assert subs["link"].problem.status == "unsafe_path"
    assert "is a link; it was not extracted" in subs["link"].problem.message
    assert not any(p.is_symlink() for p in (tmp_path / "extract").rglob("*"))


@pytest.mark.parametrize(
    "content",
    [b"", b"PK\x03\x04 this is not really a zip", b"%PDF-1.4 renamed to .zip"],
    ids=["empty", "truncated", "pdf"],
)
def test_a_corrupt_zip_is_a_bad_archive_row(tmp_path, content):
    archive = tmp_path / "class.zip"
    archive.write_bytes(content)

    (sub,) = collect([archive], tmp_path / "extract")

    assert (sub.id, sub.problem.status, sub.path) == ("class", "bad_archive", None)
    assert sub.problem.message.startswith("class.zip is not a readable zip")


def corrupt_member_data(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    i = data.find(b"AAAAAAAA")
    data[i : i + 8] = b"BBBBBBBB"
    archive.write_bytes(bytes(data))


def encrypt_flag(archive: Path) -> None:
    """Set the 'encrypted' flag of the first member in its local and central headers."""
    data = bytearray(archive.read_bytes())
    data[data.find(b"PK\x03\x04") + 6] |= 1
    data[data.find(b"PK\x01\x02") + 8] |= 1
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "match"),
    [(corrupt_member_data, "Bad CRC-32"), (encrypt_flag, "password required")],
    ids=["bad-crc", "encrypted"],
)
def test_a_damaged_member_is_a_bad_archive_row_and_the_others_are_extracted(
    tmp_path, damage, match
):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("alice.ipynb", "A" * 1000)
        zf.writestr("bob.ipynb", "{}")
    damage(archive)

    subs = {s.id: s for s in collect([archive], tmp_path / "extract")}

    assert subs["alice"].problem.status == "bad_archive"
    assert subs["alice"].path is None
    assert "'alice.ipynb' could not be extracted" in subs["alice"].problem.message
    assert match in subs["alice"].problem.message
    assert subs["bob"].problem is None and subs["bob"].path.read_text() == "{}"
    assert [p.name for p in (tmp_path / "extract").rglob("*.ipynb")] == ["bob.ipynb"]


def test_a_zip_with_too_many_entries_is_a_bad_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_ZIP_MEMBERS", 3)
    archive = make_zip(tmp_path / "class.zip", {f"s{i}.ipynb": "{}" for i in range(4)})

    (sub,) = collect([archive], tmp_path / "extract")

    assert sub.problem.status == "bad_archive"
    assert "has 4 entries (limit 3)" in sub.problem.message
    assert not (tmp_path / "extract").exists() or files_under(tmp_path / "extract") == set()


def test_a_zip_member_over_the_size_limit_is_too_large_and_not_left_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_ZIP_MEMBER_BYTES", 1000)
    archive = make_zip(tmp_path / "class.zip", {"big.ipynb": "x" * 5000, "small.ipynb": "{}"})

    subs = {s.id: s for s in collect([archive], tmp_path / "extract")}

    assert subs["big"].problem.status == "too_large"
    assert "'big.ipynb' is too large to extract" in subs["big"].problem.message
    assert subs["small"].problem is None
    assert [p.name for p in (tmp_path / "extract").rglob("*.ipynb")] == ["small.ipynb"]


def test_a_zip_whose_members_together_are_too_large_stops_extracting(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_ZIP_TOTAL_BYTES", 1500)
    archive = make_zip(tmp_path / "class.zip", {"a.ipynb": "x" * 1000, "b.ipynb": "y" * 1000})

    subs = {s.id: s for s in collect([archive], tmp_path / "extract")}

    assert subs["a"].problem is None
    assert subs["b"].problem.status == "too_large"


def test_two_archives_with_the_same_name_do_not_overwrite_each_other(tmp_path):
    first = make_zip(tmp_path / "monday" / "class.zip", {"hw.ipynb": '{"day": "monday"}'})
    second = make_zip(tmp_path / "tuesday" / "class.zip", {"hw.ipynb": '{"day": "tuesday"}'})

    subs = collect([first, second], tmp_path / "extract")

    assert [s.id for s in subs] == ["hw", "hw-2"]
    assert [s.path.read_text() for s in subs] == ['{"day": "monday"}', '{"day": "tuesday"}']


def test_zip_and_folder_submissions_mix(tmp_path):
    folder = tmp_path / "late"
    touch(folder / "carol.ipynb")
    archive = make_zip(tmp_path / "class.zip", {"alice.ipynb": "{}", "bob.ipynb": "{}"})
    single = touch(tmp_path / "dave.ipynb")

    subs = collect([single, archive, folder], tmp_path / "extract")

    assert table(subs) == [("alice", None), ("bob", None), ("carol", None), ("dave", None)]
    assert all(s.path.is_file() for s in subs)


def test_collect_never_changes_the_given_paths(tmp_path):
    root = tmp_path / "class"
    touch(root / "a.ipynb")
    archive = make_zip(tmp_path / "class.zip", {"b.ipynb": "{}"})
    before = {p: os.stat(p).st_mtime_ns for p in [root / "a.ipynb", archive]}
    snapshot = archive.read_bytes()

    collect([root, archive], tmp_path / "extract")

    assert {p: os.stat(p).st_mtime_ns for p in before} == before
    assert archive.read_bytes() == snapshot


def test_a_folder_given_inside_a_checkpoints_folder_is_still_scanned(tmp_path):
    from grader.engine.submissions import collect

    inner = tmp_path / ".ipynb_checkpoints" / "class"
    inner.mkdir(parents=True)
    (inner / "alice.ipynb").write_text("{}")
    (inner / ".ipynb_checkpoints").mkdir()
    (inner / ".ipynb_checkpoints" / "alice-checkpoint.ipynb").write_text("{}")
    subs = collect([inner], tmp_path / "x")
    assert [s.id for s in subs] == ["alice"]
