"""The readers' shared parts: the release directory, image checks, row checks, letters."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from reasoner.data.readers._common import (
    DatasetRoot, Rejected, complete, example, image_format, index_letter, row_problem,
    text_letter,
)
from tests.reasoner.data.readers.releases import PNG, write


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_image_format_reads_the_signature(fmt) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format=fmt)
    assert image_format(buffer.getvalue()) == fmt


@pytest.mark.parametrize("data", [b"", b"II*\x00tiff", b"%PDF-1.4", b"RIFF\x00\x00\x00\x00WAVE"])
def test_image_format_refuses_other_data(data) -> None:
    assert image_format(data) is None


def _row(**changes) -> dict:
    row = example("t", "t-1", "test", "Which?", ["B"], "mc", choices=["x", "y"])
    row.update(changes)
    return row


def test_example_builds_strings_and_drops_blank_rationales() -> None:
    row = example("t", "t-1", "val", "How many?", [14, None, "fourteen"], "exact",
                  rationale="   ")
    assert row == {"id": "t-1", "source": "t", "split": "val", "image": None,
                   "question": "How many?", "choices": None, "answers": ["14", "fourteen"],
                   "metric": "exact", "rationale": None}


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"question": " "}, "no question: the question is empty or missing"),
    ({"question": None}, "no question: the question is empty or missing"),
    ({"answers": ["", " "]}, "no answer: the record has no (non-empty) answer"),
    ({"choices": []}, "bad choices: the option list is empty"),
    ({"choices": ["x", "two\nlines"]}, "bad choices: option B 'two\\nlines' is not one "
                                       "non-empty line"),
    ({"choices": ["x"] * 27}, "bad choices: 27 options, more than the 26 letters"),
    ({"answers": ["C"]}, "bad answer: 'C' is not an option letter of the 2 options (A, B)"),
    ({"choices": None}, "bad answer: 'B' is not an option letter of the 0 options (none)"),
])
def test_row_problem(changes, reason) -> None:
    assert row_problem(_row(**changes)) == reason


def test_letters_from_indices_and_texts() -> None:
    choices = ["4", "5", "6"]
    assert [index_letter(i, choices) for i in (0, "2", 3, -1, None, True, 1.0, "x")] == [
        "A", "C", "index 3", "index -1", "index None", "index True", "index 1.0", "index 'x'"]
    assert text_letter(" 5 ", choices) == "B"
    assert text_letter("7", choices) == "7"


def test_root_errors(tmp_path) -> None:
    write(tmp_path / "file.txt", "x")
    with pytest.raises(FileNotFoundError, match="file.txt' does not exist or is not a dir"):
        DatasetRoot(str(tmp_path / "file.txt"), dataset="t")
    with pytest.raises(ValueError, match="root must be a non-empty path or URI"):
        DatasetRoot(" ", dataset="t")
    with pytest.raises(ValueError, match="is not a usable URI"):
        DatasetRoot("nosuchscheme://bucket/x", dataset="t")
    root = DatasetRoot(str(tmp_path), dataset="t")
    with pytest.raises(FileNotFoundError, match=r"no file 'a.json' or 'b/a.json' under .*; the "
                                                r"layout read expects the a file"):
        root.find_file(["a.json", "b/a.json"], "the a file")


def test_images_are_checked_not_decoded_unless_asked(tmp_path) -> None:
    truncated = PNG[:40]
    write(tmp_path / "cut.png", truncated)
    (tmp_path / "folder.png").mkdir()
    fast = DatasetRoot(str(tmp_path), dataset="t")
    row = complete(_row(), fast, [fast.path("nothing.png"), fast.path("cut.png")])
    assert row["image"] == truncated  # the signature is right: passed through as is
    strict = DatasetRoot(str(tmp_path), dataset="t", verify_images=True)
    rejected = complete(_row(), strict, [strict.path("cut.png")])
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("bad image: ")
    assert "truncated" in rejected.reason or "corrupt" in rejected.reason
    unreadable = complete(_row(), fast, [fast.path("folder.png")])
    assert unreadable.reason.startswith("bad image: cannot read")


def test_content_is_checked_before_the_image_is_read(tmp_path) -> None:
    root = DatasetRoot(str(tmp_path), dataset="t")
    rejected = complete(_row(answers=[]), root, [root.path("missing.png")])
    assert rejected == Rejected(_row(answers=[]), "no answer: the record has no (non-empty) "
                                                  "answer")
