"""AI2D: questions/<n>.png.json, images/, abc_images/ and the official ai2d_test_ids.csv."""

from __future__ import annotations

import pytest

from tests.reasoner.data.readers.releases import PNG, PNG2, read, reasons, row, write_ai2d


def test_train_rows_use_letter_images_for_abc_questions(tmp_path) -> None:
    write_ai2d(tmp_path)
    rows, rejected = read("ai2d", tmp_path, "train")
    assert rows == [
        row("ai2d", "ai2d-train-0.png-0", "train", PNG, "Which stage comes after the egg?",
            ["A"], "mc", ["larva", "adult"]),
        row("ai2d", "ai2d-train-0.png-1", "train", PNG2, "What is A in the diagram?", ["C"],
            "mc", ["ears", "nose", "face"]),
    ]
    why = reasons(rejected)
    assert why["ai2d-train-2.png-0"].startswith("missing image")
    assert why["ai2d-train-2.png-0"].endswith("abc_images/2.png'")
    assert why["ai2d-train-2.png-1"].startswith("bad answer: 'index 3'")


def test_test_split_is_the_official_test_ids(tmp_path) -> None:
    write_ai2d(tmp_path / "ai2d")
    (tmp_path / "ai2d" / "ai2d_test_ids.csv").rename(tmp_path / "ai2d_test_ids.csv")
    rows, rejected = read("ai2d", tmp_path, "test")
    assert rejected == []
    assert [(r["id"], r["split"], r["answers"]) for r in rows] == [
        ("ai2d-test-10.png-0", "test", ["B"])]
    with pytest.raises(ValueError, match="ai2d has no split 'val'"):
        read("ai2d", tmp_path, "val")
