"""TextVQA (Singh et al. 2019), release 0.5.1.

Layout read (the official downloads ``TextVQA_0.5.1_{train,val,test}.json``,
``train_val_images.zip`` and ``test_images.zip`` from dl.fbaipublicfiles.com/textvqa, as the
MMPretrain ``TextVQA`` dataset docstring lists them; loaders such as OpenGVLab's
Multi-Modality-Arena read ``train_images/<image_id>.jpg`` for the val split)::

    <root>/TextVQA_0.5.1_{train,val,test}.json   {"dataset_name": "textvqa", "data": [...]}
    <root>/train_images/<image_id>.jpg           train and val images (train_val_images.zip)
    <root>/test_images/<image_id>.jpg            test images (test_images.zip)

A record has ``question_id``, ``question``, ``image_id``, ``answers`` (10 annotators; absent
in test, whose records are therefore rejected).

Rows: the 10 answers, metric ``vqa`` (min(#matches / 3, 1)), no choices, no rationale. Ids are
``textvqa-<split>-<question_id>``. Splits: train, val and test map to themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import DatasetRoot, Rejected, check_split, complete, example

SPLITS = {"train": "train", "val": "val", "test": "test"}


def read_textvqa(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                 verify_images: bool = False) -> Iterator[dict | Rejected]:
    """TextVQA rows of ``split``."""
    schema_split = check_split("textvqa", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="textvqa", verify_images=verify_images)
    name = f"TextVQA_0.5.1_{split}.json"
    records = ds.read_list(ds.find_file([name], f"TextVQA's {name}"), "data")
    image_dir = ds.path("test_images" if split == "test" else "train_images")
    for record in records:
        row = example("textvqa", f"textvqa-{split}-{record.get('question_id')}", schema_split,
                      record.get("question"), record.get("answers") or [], "vqa")
        yield complete(row, ds, [f"{image_dir}/{record.get('image_id')}.jpg"])
