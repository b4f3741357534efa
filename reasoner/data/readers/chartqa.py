"""ChartQA (Masry et al. 2022).

Layout read (the ``ChartQA Dataset`` folder of the ``vis-nlp/ChartQA`` GitHub repository and of
the ``ahmed-masry/ChartQA`` Hugging Face repository, as the repository README draws it; the
records checked against its ``ChartQA Dataset/test/test_human.json``)::

    <root>/ChartQA Dataset/{train,val,test}/{split}_human.json       human-authored questions
    <root>/ChartQA Dataset/{train,val,test}/{split}_augmented.json   machine-generated questions
    <root>/ChartQA Dataset/{train,val,test}/png/<imgname>            the chart images

``<root>`` may also be the ``ChartQA Dataset`` folder itself. Each JSON file is a list of
``{"imgname", "query", "label"}``; ``label`` is the answer (a string; a list is taken as several
accepted answers).

Rows: the query, the label as the answer, metric ``relaxed`` (VLMEvalKit's
``relaxed_correctness``), no choices, no rationale. Ids are
``chartqa-<split>-<human|augmented>-<index in the file, 5 digits>``. Splits: train, val, test
map to themselves; ``subset`` picks "human", "augmented" or "both" (human first; the default,
as VLMEvalKit's ChartQA_TEST holds both).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import DatasetRoot, Rejected, check_split, complete, example

SPLITS = {"train": "train", "val": "val", "test": "test"}
SUBSETS = {"human": ("human",), "augmented": ("augmented",), "both": ("human", "augmented")}


def read_chartqa(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                 subset: str = "both", verify_images: bool = False) -> Iterator[dict | Rejected]:
    """ChartQA rows of ``split`` from the ``subset`` "human", "augmented" or "both"."""
    if subset not in SUBSETS:
        raise ValueError(f"ChartQA subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    schema_split = check_split("chartqa", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="chartqa", verify_images=verify_images)
    split_dir = ds.find_dir([f"ChartQA Dataset/{split}", split],
                            f"ChartQA's 'ChartQA Dataset/{split}/' folder")
    for part in SUBSETS[subset]:
        records = ds.read_list(ds.find_file(
            [posixpath.join(split_dir, f"{split}_{part}.json")],
            f"'ChartQA Dataset/{split}/{split}_{part}.json'"))
        for index, record in enumerate(records):
            label = record.get("label")
            answers = label if isinstance(label, list) else [] if label is None else [label]
            row = example("chartqa", f"chartqa-{split}-{part}-{index:05d}", schema_split,
                          record.get("query"), answers, "relaxed")
            yield complete(row, ds, [ds.path(split_dir, "png", str(record.get("imgname")))])
