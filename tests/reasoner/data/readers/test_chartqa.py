"""ChartQA: 'ChartQA Dataset/{split}/{split}_{human,augmented}.json' with png/ images."""

from __future__ import annotations

import pytest

from tests.reasoner.data.readers.releases import PNG, PNG2, read, reasons, row, write_chartqa


def chart_row(id_: str, image: bytes, question: str, answers: list[str]) -> dict:
    return row("chartqa", id_, "test", image, question, answers, "relaxed")


def test_human_and_augmented_rows(tmp_path) -> None:
    write_chartqa(tmp_path)
    rows, rejected = read("chartqa", tmp_path, "test")
    assert rows == [
        chart_row("chartqa-test-human-00000", PNG, "How many food items are shown?", ["14"]),
        chart_row("chartqa-test-human-00001", PNG2, "What's the value of the lowest bar?",
                  ["23"]),
        chart_row("chartqa-test-augmented-00001", PNG2, "Which is largest?", ["UK", "U.K."]),
    ]
    why = reasons(rejected)
    assert why["chartqa-test-human-00002"].startswith("no answer")
    assert why["chartqa-test-augmented-00000"].startswith("missing image: no file ")
    assert why["chartqa-test-augmented-00000"].endswith("ChartQA Dataset/test/png/missing.png'")


def test_subset_and_root_inside_the_dataset_folder(tmp_path) -> None:
    write_chartqa(tmp_path)
    rows, rejected = read("chartqa", tmp_path / "ChartQA Dataset", "test", subset="augmented")
    assert [r["id"] for r in rows] == ["chartqa-test-augmented-00001"]
    assert [r.row["id"] for r in rejected] == ["chartqa-test-augmented-00000"]
    with pytest.raises(ValueError, match="subset must be one of"):
        read("chartqa", tmp_path, "test", subset="all")


def test_missing_split_folder_names_the_layout(tmp_path) -> None:
    write_chartqa(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no directory 'ChartQA Dataset/val' or 'val'"):
        read("chartqa", tmp_path, "val")
