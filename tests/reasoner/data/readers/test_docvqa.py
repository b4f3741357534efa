"""DocVQA and InfographicVQA: the RRC JSON files {"data": [...]} and their image folders."""

from __future__ import annotations

import pytest

from tests.reasoner.data.readers.releases import (
    JPEG, PNG, docvqa_record, read, reasons, row, write, write_docvqa, write_infovqa,
)


def test_docvqa_rows(tmp_path) -> None:
    write_docvqa(tmp_path)
    rows, rejected = read("docvqa", tmp_path, "val")
    assert rows == [row("docvqa", "docvqa-val-49153", "val", PNG, "What is the date?",
                        ["May 1, 1970", "1 May 1970"], "anls")]
    why = reasons(rejected)
    assert why["docvqa-val-24581"].startswith("missing image")
    assert "spdocvqa_images/nkbl0226_1.png" in why["docvqa-val-24581"]
    assert why["docvqa-val-57349"].startswith("no answer")


def test_docvqa_first_release_layout_and_test_split(tmp_path) -> None:
    write(tmp_path / "test" / "test_v1.0.json", {"dataset_name": "docvqa", "data": [
        docvqa_record(57344, "What is the title?", "documents/ffbf0023_4.png", None)]})
    write(tmp_path / "test" / "documents" / "ffbf0023_4.png", PNG)
    write(tmp_path / "train" / "train_v1.0.json", {"data": [
        docvqa_record(1, "Whose letter?", "documents/abc_1.png", ["ITC"])]})
    write(tmp_path / "train" / "documents" / "abc_1.png", PNG)
    rows, rejected = read("docvqa", tmp_path, "test")
    assert rows == [] and reasons(rejected) == {
        "docvqa-test-57344": "no answer: the record has no (non-empty) answer"}
    rows, _ = read("docvqa", tmp_path, "train")
    assert [(r["id"], r["answers"], r["image"]) for r in rows] == [("docvqa-train-1", ["ITC"], PNG)]


def test_docvqa_file_without_data_list(tmp_path) -> None:
    write(tmp_path / "val_v1.0.json", [{"questionId": 1}])
    with pytest.raises(ValueError, match="'data' entry holding a list"):
        read("docvqa", tmp_path, "val")
    (tmp_path / "val_v1.0.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read("docvqa", tmp_path, "val")


def test_infovqa_rows(tmp_path) -> None:
    write_infovqa(tmp_path)
    rows, rejected = read("infovqa", tmp_path, "val")
    assert rows == [row("infovqa", "infovqa-val-65718", "val", JPEG,
                        "What percentage of people are vaccinated?", ["24%", "24"], "anls")]
    assert reasons(rejected)["infovqa-val-65719"].startswith("bad image")
    assert reasons(rejected)["infovqa-val-65719"].endswith("37314.jpeg' is empty")
