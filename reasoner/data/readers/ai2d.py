"""AI2D (Kembhavi et al. 2016), the AI2 Diagrams release with its official test ids.

Layout read (``ai2d-all.zip`` unzipped, plus ``ai2d_test_ids.csv`` downloaded beside it, as the
release README and converters such as big_vision's AI2D TFDS builder describe it)::

    <root>/questions/<n>.png.json   {"imageName": "<n>.png", "questions": {<text>: {
                                        "abcLabel", "answerTexts", "correctAnswer",
                                        "questionId"}}}
    <root>/images/<n>.png           the diagrams
    <root>/abc_images/<n>.png       the diagrams with their text labels replaced by letters
    <root>/ai2d_test_ids.csv        one image id (<n>) per line: the test images

``<root>`` may also be the folder holding ``ai2d/`` (the zip's top folder) with the ids file.
A question with ``abcLabel`` true refers to letters drawn over the diagram's labels, so its image
is ``abc_images/<n>.png`` (the folder is not named in the release README; it is in the AI2D
layouts of InternVL and MMEvol): without it such questions are rejected ("missing image"), never
shown the unlettered diagram.

Rows: the question text, ``answerTexts`` as choices, the letter of ``correctAnswer`` (0-based),
metric ``mc``, no rationale. Ids are ``ai2d-<split>-<questionId>`` (e.g. ``ai2d-test-0.png-0``).
Splits: test = the questions of images listed in the ids file, train = all others.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import (
    DatasetRoot, Rejected, check_split, complete, example, index_letter,
)

SPLITS = {"train": "train", "test": "test"}


def _image_id(path: str) -> str:
    return posixpath.basename(path).split(".", 1)[0]


def _order(image_id: str) -> tuple:
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


def read_ai2d(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
              verify_images: bool = False) -> Iterator[dict | Rejected]:
    """AI2D rows of ``split`` ("train" or "test", by the official test image ids)."""
    schema_split = check_split("ai2d", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="ai2d", verify_images=verify_images)
    base = ds.find_dir(["questions", "ai2d/questions"], "AI2D's questions/ folder")
    base = posixpath.dirname(base)
    ids_file = ds.find_file([posixpath.join(base, "ai2d_test_ids.csv"), "ai2d_test_ids.csv"],
                            "the official ai2d_test_ids.csv beside the release")
    test_ids = set(re.findall(r"[^\s,]+", ds.read_bytes(ids_file).decode("utf-8")))
    files = ds.list_files(ds.path(base, "questions"), ".json")
    for path in sorted(files, key=lambda p: _order(_image_id(p))):
        if (_image_id(path) in test_ids) != (split == "test"):
            continue
        content = ds.read_json(path)
        image_name = str(content.get("imageName") or f"{_image_id(path)}.png")
        for text, q in (content.get("questions") or {}).items():
            choices = q.get("answerTexts") or []
            row = example("ai2d", f"ai2d-{split}-{q.get('questionId')}", schema_split, text,
                          [index_letter(q.get("correctAnswer"), choices)], "mc",
                          choices=choices)
            folder = "abc_images" if q.get("abcLabel") else "images"
            yield complete(row, ds, [ds.path(base, folder, image_name)])
