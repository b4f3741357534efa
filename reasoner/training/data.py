"""Training data from the run's artifacts: read, checked, mixed, and served to TRL's collators.

Everything that can be wrong with the data is found here, on the driver, before any worker
starts: a missing or empty artifact, rows that break the schema, an image that does not decode,
reference log-probs that do not cover the pairs, an SFT mix that selects nothing. Each is a
``SchemaError`` or ``RunDirError`` naming the artifact, row, id and column.

Rows reach TRL in its conversational prompt/completion form (``reasoner.prompts.chat_messages``:
the user turn is one image then the prompt text), so the loss is on completion tokens only.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from reasoner.data.images import ImageError, decode_image
from reasoner.prompts import chat_messages
from reasoner.rundir import RunDir, RunDirError
from reasoner.schema import SchemaError

logger = logging.getLogger(__name__)

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_chosen_corrupt_logps")
"""Reference log-probs a preference row may carry (the last for the mDPO term)."""

FULL_MODES = {"format": (), "direct": ("direct",), "cot": ("cot",), "both": ("cot", "direct")}


def _order_key(seed: int, row_id: str) -> str:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def check_images(rows: Sequence[Mapping[str, Any]], artifact: str) -> None:
    """Decode every row's image; a :class:`SchemaError` naming the first that does not decode."""
    for index, row in enumerate(rows):
        try:
            decode_image(row["image"])
        except (ImageError, TypeError) as e:
            raise SchemaError(artifact, f"the image cannot be read: {e}", column="image", row=index,
                              row_id=row.get("id")) from e


def check_batch(num_rows: int, per_device_batch_size: int, num_workers: int, artifact: str) -> None:
    """A :class:`SchemaError` if ``num_rows`` cannot give every worker one batch."""
    per_step = per_device_batch_size * num_workers
    if num_rows < per_step:
        raise SchemaError(artifact, f"{num_rows} rows cannot fill one batch on every worker (per_device_batch_size "
                          f"x num_workers = {per_device_batch_size} x {num_workers} = {per_step}): make more data "
                          "or lower the batch size")


def _read(run: RunDir, artifact: str) -> list[dict[str, Any]]:
    rows = run.read_table(artifact, schema_name=artifact).to_pylist()
    if not rows:
        raise SchemaError(artifact, f"{run.path(artifact)} has no rows: nothing to train on")
    return rows


def mix_sft_rows(rows: Sequence[Mapping[str, Any]], sources: Mapping[str, str], mix: str, format_examples: int,
                 seed: int, captions: bool = True) -> list[dict[str, Any]]:
    """The SFT rows of ``mix`` (paper figure 5): every row of the modes ``FULL_MODES[mix]``, plus
    ``format_examples`` rows of each other answering mode per source (format alignment), picked
    by a seeded hash of the id, plus every caption row if ``captions``. Rows keep their input
    order."""
    if mix not in FULL_MODES:
        raise ValueError(f"mix must be one of {sorted(FULL_MODES)}, got {mix!r}")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row["mode"] != "caption":
            groups[sources.get(row["id"], "unknown"), row["mode"]].append(row["id"])
    formatted = set()
    for (_, mode), ids in groups.items():
        formatted.update((i, mode) for i in sorted(ids, key=lambda i: _order_key(seed, i))[:format_examples])
    return [dict(r) for r in rows if r["mode"] in FULL_MODES[mix] or (r["id"], r["mode"]) in formatted
            or (captions and r["mode"] == "caption")]


def load_sft_rows(run: RunDir, mix: str, format_examples: int, seed: int, *, captions: bool = True,
                  check: bool = True) -> list[dict]:
    """The rows of ``<run>/sft_data`` that ``mix`` and ``captions`` select (see :func:`mix_sft_rows`)."""
    rows = _read(run, "sft_data")
    sources: dict[str, str] = {}
    if run.manifest("examples") is not None:
        index = run.read_table("examples", columns=["id", "source"])
        sources = dict(zip(index.column("id").to_pylist(), index.column("source").to_pylist()))
    selected = mix_sft_rows(rows, sources, mix, format_examples, seed, captions)
    if not selected:
        raise SchemaError("sft_data", f"mix={mix!r} with format_examples={format_examples} selects no rows of "
                          f"{len(rows)}: use another mix or more format examples")
    if check:
        check_images(selected, "sft_data")
    counts = defaultdict(int)
    for row in selected:
        counts[row["mode"]] += 1
    logger.info("sft_data: %d of %d rows for mix %r (%s)", len(selected), len(rows), mix, dict(counts))
    return selected


def load_pairs(run: RunDir, *, check: bool = True) -> list[dict[str, Any]]:
    """The rows of ``<run>/pairs``, sorted by ``(id, pair_index)``, images checked."""
    rows = sorted(_read(run, "pairs"), key=lambda r: (r["id"], r["pair_index"]))
    if check:
        check_images(rows, "pairs")
        for index, row in enumerate(rows):
            if row["chosen"] == row["rejected"]:
                raise SchemaError("pairs", "chosen and rejected are the same text", column="chosen",
                                  row=index, row_id=row["id"])
    return rows


def attach_reference(pairs: list[dict[str, Any]], reference: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``pairs`` with ``ref_chosen_logps`` / ``ref_rejected_logps`` from the ``dpo_ref`` rows."""
    by_key = {(r["id"], r["pair_index"]): r for r in reference}
    out = []
    for row in pairs:
        ref = by_key.get((row["id"], row["pair_index"]))
        if ref is None:
            raise RunDirError(f"dpo_ref has no reference log-probs for pair ({row['id']!r}, {row['pair_index']}): "
                              "delete <run>/dpo_ref and rerun train_dpo to score the pairs again")
        item = {**row, "ref_chosen_logps": ref["chosen_ref_logp"], "ref_rejected_logps": ref["rejected_ref_logp"]}
        if "corrupt_image" in row:
            if ref.get("chosen_corrupt_ref_logp") is None:
                raise RunDirError("dpo_ref has no corrupted-image reference log-probs (the mDPO term): delete "
                                  "<run>/dpo_ref and rerun train_dpo to score the pairs again")
            item["ref_chosen_corrupt_logps"] = ref["chosen_corrupt_ref_logp"]
        out.append(item)
    return out


def _sft_batch(batch: dict[str, list]) -> dict[str, list]:
    users, assistants = zip(*(chat_messages(p, c) for p, c in zip(batch["prompt"], batch["completion"])))
    return {"image": [decode_image(b) for b in batch["image"]], "prompt": [[u] for u in users],
            "completion": [[a] for a in assistants]}


def _preference_batch(batch: dict[str, list]) -> dict[str, list]:
    out: dict[str, list] = {"image": [decode_image(b) for b in batch["image"]], "prompt": [], "chosen": [],
                            "rejected": []}
    for prompt, chosen, rejected in zip(batch["prompt"], batch["chosen"], batch["rejected"]):
        user, good = chat_messages(prompt, chosen)
        out["prompt"].append([user])
        out["chosen"].append([good])
        out["rejected"].append([chat_messages(prompt, rejected)[1]])
    if "corrupt_image" in batch:
        out["corrupt_image"] = [decode_image(b) for b in batch["corrupt_image"]]
    for key in REF_COLUMNS:
        if key in batch:
            out[key] = batch[key]
    return out


def sft_dataset(rows: Sequence[Mapping[str, Any]]):
    """A ``datasets.Dataset`` of SFT rows that yields TRL's conversational prompt/completion form
    (image decoded on access: TRL's vision collators process images batch by batch)."""
    from datasets import Dataset

    table = {k: [r[k] for r in rows] for k in ("prompt", "completion", "image")}
    dataset = Dataset.from_dict(table)
    dataset.set_transform(_sft_batch)
    return dataset


def preference_dataset(rows: Sequence[Mapping[str, Any]]):
    """A ``datasets.Dataset`` of pairs in TRL's conversational preference form, with the reference
    log-probs (``ref_chosen_logps``, ``ref_rejected_logps``) when the rows carry them."""
    from datasets import Dataset

    keys = ["prompt", "chosen", "rejected", "image"]
    keys += [k for k in ("corrupt_image", *REF_COLUMNS) if rows and k in rows[0]]
    dataset = Dataset.from_dict({k: [r[k] for r in rows] for k in keys})
    dataset.set_transform(_preference_batch)
    return dataset
