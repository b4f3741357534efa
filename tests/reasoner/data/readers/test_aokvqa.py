"""A-OKVQA: direct-answer and multiple-choice rows from aokvqa_v1p0_{split}.json + COCO 2017."""

from __future__ import annotations

import shutil

import pytest

from tests.reasoner.data.readers.releases import JPEG, read, reasons, row, write_aokvqa

RATIONALE = "He swings it at the ball.\nIt is a baseball bat."


def test_direct_answer_rows(tmp_path) -> None:
    write_aokvqa(tmp_path)
    rows, rejected = read("aokvqa", tmp_path, "val")
    assert rows == [
        row("aokvqa", "aokvqa-val-22jbM6gDxdaMaunuzgrsBB", "val", JPEG,
            "What is the man holding?", ["bat"] * 7 + ["stick"] * 3, "aokvqa", rationale=RATIONALE),
        row("aokvqa", "aokvqa-val-q2", "val", JPEG, "Which season?", ["winter"] * 10, "aokvqa",
            rationale="There is snow."),
    ]
    assert list(reasons(rejected)) == ["aokvqa-val-q3"]
    assert rejected[0].reason.startswith("missing image")
    assert "val2017/000000000003.jpg" in rejected[0].reason


def test_multiple_choice_rows(tmp_path) -> None:
    write_aokvqa(tmp_path)
    rows, rejected = read("aokvqa-mc", tmp_path, "val")
    assert rows == [
        row("aokvqa-mc", "aokvqa-mc-val-22jbM6gDxdaMaunuzgrsBB", "val", JPEG,
            "What is the man holding?", ["A"], "mc", ["bat", "ball", "cup", "hat"], RATIONALE),
    ]
    why = reasons(rejected)
    assert why["aokvqa-mc-val-q2"] == ("bad answer: 'index 5' is not an option letter of the "
                                       "2 options (A, B)")
    assert why["aokvqa-mc-val-q3"].startswith("missing image")


def test_form_option_and_coco_root(tmp_path) -> None:
    release, coco = tmp_path / "aokvqa", tmp_path / "elsewhere" / "coco"
    write_aokvqa(release)
    coco.mkdir(parents=True)
    shutil.move(release / "val2017", coco / "val2017")
    rows, _ = read("aokvqa", release, "val", form="mc")  # images no longer under the release
    assert rows == []
    rows, _ = read("aokvqa", release, "val", form="mc", coco_root=str(coco))
    assert [r["id"] for r in rows] == ["aokvqa-mc-val-22jbM6gDxdaMaunuzgrsBB"]
    with pytest.raises(ValueError, match="form must be one of"):
        read("aokvqa", release, "val", form="open")


def test_coco_subfolder_and_test_split_without_answers(tmp_path) -> None:
    write_aokvqa(tmp_path)
    (tmp_path / "coco").mkdir()
    shutil.move(tmp_path / "val2017", tmp_path / "coco" / "val2017")
    rows, _ = read("aokvqa", tmp_path, "val")
    assert len(rows) == 2
    rows, rejected = read("aokvqa-mc", tmp_path, "test")
    assert rows == [] and reasons(rejected) == {
        "aokvqa-mc-test-t1": "no answer: the record has no (non-empty) answer"}
    assert rejected[0].row["split"] == "test"
