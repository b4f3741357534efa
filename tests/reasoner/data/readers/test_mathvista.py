"""MathVista: data/{testmini,test}.json keyed by pid, images relative to the JSON."""

from __future__ import annotations

import shutil

from tests.reasoner.data.readers.releases import JPEG, read, reasons, row, write_mathvista


def test_multi_choice_answers_become_letters(tmp_path) -> None:
    write_mathvista(tmp_path)
    rows, rejected = read("mathvista", tmp_path, "testmini")
    assert rows == [
        row("mathvista", "mathvista-testmini-1", "test", JPEG,
            "By what distance is the spring compressed?", ["1.2"], "exact"),
        row("mathvista", "mathvista-testmini-3", "test", JPEG, "Find m angle BOC.", ["C"], "mc",
            ["135°", "140°", "145°", "150°"]),
    ]
    assert reasons(rejected) == {
        "mathvista-testmini-5": "bad answer: '107' is not an option letter of the 2 options "
                                "(A, B)"}


def test_hugging_face_layout_and_withheld_test_answers(tmp_path) -> None:
    write_mathvista(tmp_path)
    (tmp_path / "data" / "testmini.json").rename(tmp_path / "annot_testmini.json")
    shutil.move(tmp_path / "data" / "images", tmp_path / "images")
    rows, _ = read("mathvista", tmp_path, "testmini")
    assert [r["id"] for r in rows] == ["mathvista-testmini-1", "mathvista-testmini-3"]
    rows, rejected = read("mathvista", tmp_path, "test")
    assert rows == [] and reasons(rejected) == {
        "mathvista-test-1001": "no answer: the record has no (non-empty) answer"}
