"""Readers of the paper's real datasets in their native release layouts (DESIGN.md, "The
embedded default"), from a local path or a bucket, into rows of the ``examples`` schema.

``read_dataset(name, root, split)`` yields, record by record, an examples row (``id``,
``source``, ``split``, ``image`` (the image file's raw bytes), ``question``, ``choices``,
``answers``, ``metric``, ``rationale``) or a ``Rejected(row, reason)`` for a record that cannot
be used (no image, no answer, an answer outside the options...), so a stage can write it to
``<run>/rejected/`` with its reason. ``split`` is the dataset's own split name (e.g. MathVista's
"testmini"); each row's ``split`` is the schema's ("train" | "val" | "test"), mapped as each
reader's module documents.

Each module documents the layout it reads, the source it was checked against, the metric and the
ids; ``READERS[name]`` can also be called directly with the reader's own options.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import ReaderFn, Rejected
from reasoner.data.readers.ai2d import read_ai2d
from reasoner.data.readers.aokvqa import read_aokvqa
from reasoner.data.readers.chartqa import read_chartqa
from reasoner.data.readers.docvqa import read_docvqa, read_infovqa
from reasoner.data.readers.gllava import read_gllava
from reasoner.data.readers.mathvision import read_mathvision
from reasoner.data.readers.mathvista import read_mathvista
from reasoner.data.readers.scienceqa import read_scienceqa
from reasoner.data.readers.textvqa import read_textvqa

__all__ = ["DATASETS", "READERS", "ReaderFn", "Rejected", "read_dataset"]

READERS: dict[str, ReaderFn] = {
    "aokvqa": functools.partial(read_aokvqa, form="da"),
    "aokvqa-mc": functools.partial(read_aokvqa, form="mc"),
    "chartqa": read_chartqa,
    "docvqa": read_docvqa,
    "infovqa": read_infovqa,
    "textvqa": read_textvqa,
    "scienceqa": read_scienceqa,
    "ai2d": read_ai2d,
    "mathvision": read_mathvision,
    "gllava": read_gllava,
    "mathvista": read_mathvista,
}
DATASETS: tuple[str, ...] = tuple(READERS)


def read_dataset(name: str, root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                 limit: int | None = None, **options) -> Iterator[dict | Rejected]:
    """The rows (and rejected records) of dataset ``name``'s ``split`` read from ``root``.

    Args:
        name: one of ``DATASETS``.
        root: the dataset's release directory: a local path or a URI (``s3://bucket/x``).
        split: the dataset's own split name (each reader lists its splits; an unknown one is
            a ``ValueError`` naming them).
        filesystem: a ``pyarrow.fs.FileSystem`` to read ``root`` from (then a path inside it);
            by default resolved from the URI, or the local filesystem.
        limit: stop after this many items (rows and rejected records together).
        **options: the reader's own options, e.g. ``subset="human"`` for ChartQA,
            ``coco_root=...`` for A-OKVQA, ``verify_images=True`` (all readers: fully decode
            each image instead of checking its signature).

    Raises (at the call, not at the first iteration):
        ValueError: unknown dataset or split, a bad option value, malformed annotation JSON.
        FileNotFoundError: the root or an annotation file the layout needs is missing.
        TypeError: an option the reader does not take.
    """
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be None or a non-negative int, got {limit!r}")
    items = iter(READERS[name](root, split, filesystem=filesystem, **options))
    # Run the reader up to its first item now, so that a missing root or annotation file, an
    # unknown split or a bad option is an error of this call, not of the first iteration.
    first = next(items, None)
    items = itertools.chain(() if first is None else (first,), items)
    return items if limit is None else itertools.islice(items, limit)
