"""DocVQA (Mathew et al. 2021) and InfographicVQA (Mathew et al. 2022): the RRC releases.

Both come from the Robust Reading Competition (rrc.cvc.uab.es, DocVQA challenge tasks 1 and 3)
as JSON files ``{"dataset_name", "dataset_split", "dataset_version", "data": [...]}``.

DocVQA (single page, task 1). Layouts read, both seen in public loaders (e.g. the
``spdocvqa_qas`` / ``spdocvqa_images`` layout in DocVQA dataset builders, the per-split
``<split>/<split>_v1.0.json`` + ``<split>/documents/`` layout of the first release)::

    <root>/spdocvqa_qas/{train,val}_v1.0_withQT.json, test_v1.0.json   (or at <root>/)
    <root>/spdocvqa_images/<name>.png
  or
    <root>/{train,val,test}/{split}_v1.0.json  and  <root>/{split}/documents/<name>.png

A record has ``questionId``, ``question``, ``image`` ("documents/<name>.png"), ``docId``,
``answers`` (absent in test). The image is looked up relative to the annotation file, to the
root, then by name in ``spdocvqa_images/``.

InfographicVQA (task 3)::

    <root>/infographicsvqa_qas/infographicsVQA_{train,val,test}_v1.0.json  (val also
        ``_withQT``; or at <root>/)
    <root>/infographicsvqa_images/<image_local_name>

A record has ``questionId``, ``question``, ``image_local_name``, ``answers`` (absent in test).

Rows: every accepted answer, metric ``anls`` (VLMEvalKit's ``anls_compute``), no choices, no
rationale. Ids are ``docvqa-<split>-<questionId>`` / ``infovqa-<split>-<questionId>``. Splits:
train, val and test map to themselves; test records have no answers and are rejected.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import DatasetRoot, Rejected, check_split, complete, example

SPLITS = {"train": "train", "val": "val", "test": "test"}


def _read(ds: DatasetRoot, split: str, annotations: str, image_key: str,
          locate: Callable[[str], list[str]]) -> Iterator[dict | Rejected]:
    """Rows of one RRC annotation file; ``locate`` lists the paths an image name may have."""
    for record in ds.read_list(annotations, "data"):
        row = example(ds.dataset, f"{ds.dataset}-{split}-{record.get('questionId')}",
                      SPLITS[split], record.get("question"), record.get("answers") or [], "anls")
        yield complete(row, ds, locate(str(record.get(image_key))))


def read_docvqa(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                verify_images: bool = False) -> Iterator[dict | Rejected]:
    """DocVQA (single-page) rows of ``split``."""
    check_split("docvqa", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="docvqa", verify_images=verify_images)
    names = [f"{split}_v1.0_withQT.json", f"{split}_v1.0.json"]
    annotations = ds.find_file(
        [f"{d}{n}" for d in ("spdocvqa_qas/", "", f"{split}/") for n in names],
        f"DocVQA's spdocvqa_qas/{names[0]} or {split}/{names[1]}")
    bases = [posixpath.dirname(annotations), ds.root, ds.path(split)]

    def locate(image: str) -> list[str]:
        by_name = ds.path("spdocvqa_images", posixpath.basename(image))
        return [posixpath.join(b, image) for b in bases] + [by_name]

    yield from _read(ds, split, annotations, "image", locate)


def read_infovqa(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                 verify_images: bool = False) -> Iterator[dict | Rejected]:
    """InfographicVQA rows of ``split``."""
    check_split("infovqa", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="infovqa", verify_images=verify_images)
    stem = f"infographicsVQA_{split}_v1.0"
    annotations = ds.find_file(
        [f"{d}{stem}{s}.json" for d in ("infographicsvqa_qas/", "") for s in ("", "_withQT")],
        f"InfographicVQA's infographicsvqa_qas/{stem}.json")
    bases = [ds.path("infographicsvqa_images"), ds.path("images"),
             posixpath.dirname(annotations), ds.root]
    yield from _read(ds, split, annotations, "image_local_name",
                     lambda name: [posixpath.join(b, name) for b in bases])
