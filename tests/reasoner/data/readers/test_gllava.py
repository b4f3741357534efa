"""G-LLaVA / Geo170K: qa_tuning.json conversations and the GeoQA test jsonl files."""

from __future__ import annotations

import pytest

from reasoner.data.readers.gllava import parse_answer, parse_question
from tests.reasoner.data.readers.releases import PNG, PNG2, read, reasons, row, write_gllava


def test_train_rows_from_conversations(tmp_path) -> None:
    write_gllava(tmp_path)
    rows, rejected = read("gllava", tmp_path, "train")
    assert rows == [
        row("gllava", "gllava-train-000000", "train", PNG,
            "If angle 1 measures 32°, what is angle 2?", ["C"], "mc",
            ["32°", "68°", "58°", "34°"],
            "Since a || b, angle 2 = 180° - 90° - 32° = 58°. Therefore, the answer is: C."),
        row("gllava", "gllava-train-000001", "train", PNG2, "Find x.", ["5"], "exact",
            rationale="By Pythagoras x = 5."),
    ]
    assert reasons(rejected) == {
        "gllava-train-000002": "no answer: the record has no (non-empty) answer"}


def test_test_rows_from_the_geoqa_files_in_a_checkout(tmp_path) -> None:
    write_gllava(tmp_path / "playground" / "data")
    rows, rejected = read("gllava", tmp_path, "test")
    assert rows == [row("gllava", "gllava-test-0", "test", PNG,
                        "In triangle ABC, angle A = 80.0, then angle CED is ()", ["D"], "mc",
                        ["40°", "60°", "120°", "140°"])]
    assert reasons(rejected) == {
        "gllava-test-1": "bad answer: 'C' is not an option letter of the 2 options (A, B)"}


@pytest.mark.parametrize("text, expected", [
    ("<image>\nQuestion: What?\nChoices:\nA: 1\nB: 2", ("What?", ["1", "2"])),
    ("Question:Why?\nChoices:\n(A) x\n(B) y", ("Why?", ["x", "y"])),
    ("Question: Odd?\nChoices:\nA: 1\nC: 3", ("Odd?", [])),  # letters out of order
    ("<image>\nHow long is AB?", ("How long is AB?", None)),
])
def test_parse_question(text, expected) -> None:
    assert parse_question(text) == expected


def test_parse_answer() -> None:
    assert parse_answer("a.\nb.\nAnswer: (B).", ["x", "y"]) == ("B", "a.\nb.")
    assert parse_answer("x = 3.\nAnswer: 3", None) == ("3", "x = 3.")
    assert parse_answer("no marker here", None) == (None, "no marker here")
