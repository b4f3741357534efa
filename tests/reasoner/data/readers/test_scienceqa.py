"""ScienceQA: problems.json + pid_splits.json, images/{split}/{pid}/image.png."""

from __future__ import annotations

import shutil

from tests.reasoner.data.readers.releases import PNG, PNG2, read, reasons, row, write_scienceqa


def test_rows_letters_hint_and_solution(tmp_path) -> None:
    write_scienceqa(tmp_path)
    rows, rejected = read("scienceqa", tmp_path, "train")
    assert rows == [row("scienceqa", "scienceqa-train-1", "train", PNG,
                        "Hint: The map shows the USA.\nWhich state is highlighted?", ["B"], "mc",
                        ["Ohio", "Utah", "Iowa"], "This state is Utah.")]
    assert reasons(rejected) == {
        "scienceqa-train-2": "no image: ScienceQA item 2 is text-only",
        "scienceqa-train-3": "bad answer: 'index 2' is not an option letter of the 2 options "
                             "(A, B)",
    }


def test_minival_maps_to_val_from_a_repository_checkout(tmp_path) -> None:
    release = tmp_path / "data" / "scienceqa"
    write_scienceqa(release)
    shutil.move(release / "images" / "val", release / "val")  # images/ is optional
    rows, rejected = read("scienceqa", tmp_path, "minival")
    assert rejected == []
    assert rows == [row("scienceqa", "scienceqa-minival-4", "val", PNG2,
                        "What is the capital of Peru?", ["A"], "mc", ["Lima", "Quito"])]
