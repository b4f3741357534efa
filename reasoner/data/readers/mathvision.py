"""MathVision / MATH-V (Wang et al. 2024).

Layout read (the ``mathllm/MATH-V`` GitHub repository: ``data/testmini.jsonl`` was checked,
``data/test.jsonl`` and ``images/<id>.jpg`` are listed beside it)::

    <root>/data/{test,testmini}.jsonl   one problem a line: {"id", "question", "options",
                                        "answer", "solution", "level", "subject", "image"}
    <root>/images/<id>.jpg              ``image`` is "images/<id>.jpg", relative to <root>

``options`` lists the option texts (often just ["A", ..., "E"] when the options are drawn in the
image) and ``answer`` is then a letter; with no options the answer is free-form.

Rows: the question as released (``<image1>`` placeholders included); with options, the options
as choices, the letter answer and metric ``mc``; without, the answer and metric ``exact`` (a
letter answer whose options are only in the picture stays ``exact``); the ``solution`` (mostly
null) as rationale. Ids are ``mathvision-<test|testmini>-<id>``. Splits: test -> test,
testmini -> test (testmini is a subset of test; MathVision has no training split).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import DatasetRoot, Rejected, check_split, complete, example

SPLITS = {"test": "test", "testmini": "test"}


def read_mathvision(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                    verify_images: bool = False) -> Iterator[dict | Rejected]:
    """MathVision rows of ``split`` ("test" or "testmini")."""
    schema_split = check_split("mathvision", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="mathvision", verify_images=verify_images)
    problems = ds.read_jsonl(ds.find_file([f"data/{split}.jsonl", f"{split}.jsonl"],
                                          f"MathVision's data/{split}.jsonl"))
    for problem in problems:
        options = problem.get("options") or None
        answer = problem.get("answer")
        row = example("mathvision", f"mathvision-{split}-{problem.get('id')}", schema_split,
                      problem.get("question"), [] if answer is None else [answer],
                      "mc" if options else "exact", choices=options,
                      rationale=problem.get("solution"))
        image = str(problem.get("image") or f"images/{problem.get('id')}.jpg")
        yield complete(row, ds, [ds.path(image), ds.path("images", posixpath.basename(image))])
