"""TextVQA: TextVQA_0.5.1_{split}.json with train_images/ (train, val) and test_images/."""

from __future__ import annotations

from tests.reasoner.data.readers.releases import JPEG, read, reasons, row, write, write_textvqa


def test_rows_keep_all_ten_answers(tmp_path) -> None:
    write_textvqa(tmp_path)
    rows, rejected = read("textvqa", tmp_path, "val")
    assert rows == [row("textvqa", "textvqa-val-34602", "val", JPEG,
                        "what is the brand of this camera?",
                        ["nokia"] * 8 + ["nokia phone", "toshiba"], "vqa")]
    why = reasons(rejected)["textvqa-val-34603"]
    assert why.startswith("bad image") and "not a PNG, JPEG, GIF, WEBP or BMP image" in why


def test_test_split_reads_test_images_and_has_no_answers(tmp_path) -> None:
    write(tmp_path / "TextVQA_0.5.1_test.json", {"data": [
        {"question": "what time is it?", "image_id": "abc", "question_id": 7}]})
    write(tmp_path / "test_images" / "abc.jpg", JPEG)
    rows, rejected = read("textvqa", tmp_path, "test")
    assert rows == [] and reasons(rejected) == {
        "textvqa-test-7": "no answer: the record has no (non-empty) answer"}
