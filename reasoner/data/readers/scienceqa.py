"""ScienceQA (Lu et al. 2022).

Layout read (the ``lupantech/ScienceQA`` repository: ``data/scienceqa/problems.json`` and
``pid_splits.json``, images unzipped by its ``tools/download.sh`` into
``data/scienceqa/images/{train,val,test}/``)::

    <root>/problems.json          {pid: {question, choices, answer, hint, image, split,
                                         lecture, solution, ...}}
    <root>/pid_splits.json        {"train": [pid, ...], "val": [...], "test": [...],
                                   "minival": [...], "minitrain": [...], ...}
    <root>/images/<split>/<pid>/image.png   (or <root>/<split>/<pid>/image.png)

``<root>`` may also be the repository checkout (files under ``data/scienceqa/``). ``image`` is
the file name ("image.png") or null for text-only items, which are rejected ("no image").
The image folder is the problem's own ``split``.

Rows: the question, preceded by ``Hint: <hint>`` on its own line when the item has a textual
context (as VLMEvalKit's ScienceQA prompt does); the choices; the letter of ``answer`` (a
0-based index); metric ``mc``; the ``solution`` as rationale. Ids are
``scienceqa-<split>-<pid>``. Splits: train, val, test map to themselves; minitrain -> train,
minival -> val.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import (
    NO_IMAGE, DatasetRoot, Rejected, check_split, complete, example, index_letter,
)

SPLITS = {"train": "train", "val": "val", "test": "test", "minitrain": "train", "minival": "val"}


def read_scienceqa(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                   verify_images: bool = False) -> Iterator[dict | Rejected]:
    """ScienceQA rows of ``split``; text-only items come out as ``Rejected`` ("no image")."""
    schema_split = check_split("scienceqa", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="scienceqa", verify_images=verify_images)
    base = ds.find_base(["", "data/scienceqa"], "problems.json", "ScienceQA's problems.json")
    problems = ds.read_json(ds.find_file([posixpath.join(base, "problems.json")],
                                         "ScienceQA's problems.json"))
    pid_splits = ds.read_json(ds.find_file([posixpath.join(base, "pid_splits.json")],
                                           "ScienceQA's pid_splits.json"))
    if split not in pid_splits:
        raise ValueError(f"scienceqa: pid_splits.json has no {split!r} list; it has "
                         f"{sorted(pid_splits)}")
    for pid in pid_splits[split]:
        problem = problems.get(str(pid), {})
        choices = problem.get("choices") or []
        hint = (problem.get("hint") or "").strip()
        question = problem.get("question")
        if hint and isinstance(question, str):
            question = f"Hint: {hint}\n{question}"
        row = example("scienceqa", f"scienceqa-{split}-{pid}", schema_split, question,
                      [index_letter(problem.get("answer"), choices)], "mc", choices=choices,
                      rationale=problem.get("solution"))
        if not problem.get("image"):
            yield Rejected(row, f"{NO_IMAGE}: ScienceQA item {pid} is text-only")
            continue
        folder = problem.get("split") or schema_split
        yield complete(row, ds, [ds.path(base, *parts, folder, str(pid), problem["image"])
                                 for parts in (("images",), ())])
