"""MathVista (Lu et al. 2023).

Layout read (the ``lupantech/MathVista`` GitHub repository, whose ``data/testmini.json`` was
checked, images in ``data/images/``; the ``AI4Math/MathVista`` Hugging Face repository's file
list shows ``annot_testmini.json`` and ``images.zip`` at its top, read as the same records)::

    <root>/data/{testmini,test}.json   {pid: {"question", "image", "choices", "unit",
                                        "precision", "answer", "question_type",
                                        "answer_type", "pid", "metadata"}}
    <root>/data/images/<pid>.jpg       ``image`` is "images/<pid>.jpg", relative to the JSON
  or
    <root>/annot_testmini.json and <root>/images/<pid>.jpg

A JSON list of the same records is read too. ``question_type`` is "multi_choice" (``answer`` is
the text of one of ``choices``) or "free_form" (``answer_type`` integer, float or list). The test
split's answers are withheld, so its records are rejected ("no answer").

Rows: the question as released; multi_choice: the choices, the letter of the option equal to the
answer and metric ``mc`` (an answer matching no option is rejected); free_form: the answer and
metric ``exact`` (numbers compared as numbers); no rationale. Ids are
``mathvista-<testmini|test>-<pid>``. Splits: testmini -> test, test -> test.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import (
    DatasetRoot, Rejected, check_split, complete, example, text_letter,
)

SPLITS = {"testmini": "test", "test": "test"}


def read_mathvista(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                   verify_images: bool = False) -> Iterator[dict | Rejected]:
    """MathVista rows of ``split`` ("testmini" or "test")."""
    schema_split = check_split("mathvista", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="mathvista", verify_images=verify_images)
    annotations = ds.find_file(
        [f"data/{split}.json", f"{split}.json", f"annot_{split}.json", f"data/annot_{split}.json"],
        f"MathVista's data/{split}.json (GitHub) or annot_{split}.json (Hugging Face)")
    content = ds.read_json(annotations)
    problems = ([{"pid": pid, **p} for pid, p in content.items()] if isinstance(content, dict)
                else ds.read_list(annotations))
    bases = [posixpath.dirname(annotations), ds.root]
    for problem in problems:
        answer = problem.get("answer")
        multi_choice = problem.get("question_type") == "multi_choice"
        choices = problem.get("choices") if multi_choice else None
        if answer is not None and multi_choice:
            answer = text_letter(str(answer), [str(c) for c in choices or []])
        row = example("mathvista", f"mathvista-{split}-{problem.get('pid')}", schema_split,
                      problem.get("question"), [] if answer in (None, "") else [answer],
                      "mc" if multi_choice else "exact", choices=choices)
        image = str(problem.get("image") or f"images/{problem.get('pid')}.jpg")
        yield complete(row, ds, [posixpath.join(b, image) for b in bases])
