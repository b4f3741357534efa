"""MathVision: data/{test,testmini}.jsonl with images/<id>.jpg."""

from __future__ import annotations

from tests.reasoner.data.readers.releases import JPEG, read, reasons, row, write_mathvision


def test_options_give_mc_and_free_form_gives_exact(tmp_path) -> None:
    write_mathvision(tmp_path)
    rows, rejected = read("mathvision", tmp_path, "testmini")
    assert rows == [
        row("mathvision", "mathvision-testmini-6", "test", JPEG,
            "Which picture shows the kittens?\n<image1>", ["D"], "mc", ["A", "B", "C", "D", "E"]),
        row("mathvision", "mathvision-testmini-4", "test", JPEG,
            "How many different digits can you find?\n<image1>", ["6"], "exact",
            rationale="Count them: 6."),
    ]
    assert reasons(rejected) == {
        "mathvision-testmini-39": "bad answer: 'F' is not an option letter of the 2 options "
                                  "(A, B)",
        "mathvision-testmini-7": f"missing image: no file '{tmp_path}/images/7.jpg'",
    }
