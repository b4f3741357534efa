"""Rows of the examples artifact as the stages consume them: usability checks and batch conversion."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reasoner.data.images import ImageError, decode_image
from reasoner.prompts import build_prompt
from reasoner.schema import row_problem


def as_python(example: Mapping[str, Any]) -> dict:
    """``example`` with array-valued ``choices`` / ``answers`` (Ray Data hands lists to batch
    functions as numpy arrays) turned into lists; other values are left as they are."""
    out = dict(example)
    for key in ("choices", "answers"):
        if hasattr(out.get(key), "tolist"):
            out[key] = out[key].tolist()
    return out


def rows_from_batch(batch: Mapping[str, Sequence[Any]]) -> list[dict]:
    """The rows of a columnar batch (Ray Data's ``dict`` of numpy arrays), as :func:`as_python` dicts."""
    columns = list(batch)
    n = len(batch[columns[0]]) if columns else 0
    return [as_python({c: batch[c][i] for c in columns}) for i in range(n)]


def example_problem(example: Mapping[str, Any]) -> str | None:
    """Why ``example`` cannot be used by a stage that prompts a model with it, or None.

    The examples schema's checks (``row_problem``: answers present, metric known, ...), a
    question and options ``build_prompt`` accepts, and an image ``decode_image`` reads.
    """
    problem = row_problem(dict(example), "examples")
    if problem is not None:
        return f"unusable example: {problem}"
    try:
        build_prompt(example["question"], example["choices"], "cot")
    except (TypeError, ValueError) as e:
        return f"unusable example: {e}"
    try:
        decode_image(example["image"])
    except ImageError as e:
        return f"unusable example: unreadable image: {e}"
    return None


def subset(ids: Iterable[str], limit: int | None) -> list[str]:
    """``limit`` of ``ids`` (all if None), sorted: the first in the order of a hash of the id.

    A fixed pseudo-random choice, the same in every run and process, that mixes the sources and
    families of a split as the whole split does (the first ids in sorted order would all be one
    family: ``syn-chart-...``). A larger limit keeps every id a smaller one chose.
    """
    ids = set(ids)
    if limit is not None and limit < len(ids):
        ids = sorted(ids, key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).digest())[:limit]
    return sorted(ids)
