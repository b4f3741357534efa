"""Training data from the run's artifacts: checked, mixed, and served to TRL's collators, streamed.

Everything that can be wrong with the data is found on the driver, before any worker starts:
a missing or empty artifact, rows that break the schema, an image that does not decode, a pair
whose chosen and rejected are the same text, reference log-probs that do not cover the pairs, an
SFT mix that selects nothing. Each is a ``SchemaError`` or ``RunDirError`` naming the artifact,
the row (its index in the artifact's reading order, and its part), its id and column. The checks
read the artifact a batch at a time (``reasoner.training.stream``): keys and text columns first,
images one batch of rows at a time, never all at once.

Each training worker then copies the rows it trains on, again a batch at a time, into a local
Arrow file that it memory-maps as a ``datasets.Dataset`` (``stream.arrow_dataset``); a transform
decodes a row's image only when the trainer reads the row. So no process holds the artifact, and
the HF Trainer keeps its map-style behaviour: every worker sees the same rows in the same order
(the artifact's reading order), the seeded sampler shuffles them, and a resume skips the batches
the checkpoint already trained on.

Rows reach TRL in its conversational prompt/completion form (``reasoner.prompts.chat_messages``:
the user turn is one image then the prompt text), so the loss is on completion tokens only.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from reasoner.data.images import ImageError, decode_image
from reasoner.prompts import chat_messages
from reasoner.rundir import RunDir, RunDirError
from reasoner.schema import SchemaError
from reasoner.training.stream import Batch, KeyCheck, arrow_dataset, iter_artifact, validated

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_chosen_corrupt_logps")
"""Reference log-probs a preference row may carry (the last for the mDPO term)."""

FULL_MODES = {"format": (), "direct": ("direct",), "cot": ("cot",), "both": ("cot", "direct")}
ANSWER_MODES = ("cot", "direct")
CAPTION = "caption"

SFT_SCHEMA = pa.schema([("prompt", pa.string()), ("completion", pa.string()), ("image", pa.binary())])
"""The columns of a worker's SFT data file."""


def preference_schema(mdpo: bool) -> pa.Schema:
    """The columns of a worker's DPO data file (with the corrupted image and its reference for mDPO)."""
    fields = [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), ("image", pa.binary())]
    fields += [("corrupt_image", pa.binary())] if mdpo else []
    fields += [(k, pa.float64()) for k in REF_COLUMNS[: 3 if mdpo else 2]]
    return pa.schema(fields)


def _order_key(seed: int, row_id: str) -> str:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def check_batch(num_rows: int, per_device_batch_size: int, num_workers: int, artifact: str) -> None:
    """A :class:`SchemaError` if ``num_rows`` cannot give every worker one batch."""
    per_step = per_device_batch_size * num_workers
    if num_rows < per_step:
        raise SchemaError(artifact, f"{num_rows} rows cannot fill one batch on every worker (per_device_batch_size "
                          f"x num_workers = {per_device_batch_size} x {num_workers} = {per_step}): make more data "
                          "or lower the batch size")


def check_images(batch: Batch, artifact: str, keep: Sequence[bool] | None = None) -> None:
    """Decode the image of every row of ``batch`` (of those ``keep`` marks, if given); a
    :class:`SchemaError` naming the first row whose image does not decode."""
    ids, images = batch.rows.column("id"), batch.rows.column("image")
    for k in range(batch.rows.num_rows):
        if keep is not None and not keep[k]:
            continue
        try:
            decode_image(images[k].as_py())
        except (ImageError, TypeError) as e:
            raise SchemaError(artifact, f"the image cannot be read: {e} (in {batch.part})", column="image",
                              row=batch.start + k, row_id=ids[k].as_py()) from e


def _no_rows(run: RunDir, artifact: str) -> SchemaError:
    return SchemaError(artifact, f"{run.path(artifact)} has no rows: nothing to train on")


# --------------------------------------------------------------------------- SFT: the mix


@dataclass(frozen=True)
class SftSelection:
    """Which ``sft_data`` rows a mix trains on: every row of the modes ``whole``, plus the format
    rows ``formatted`` (``(id, mode)`` pairs)."""

    whole: frozenset[str]
    formatted: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def keeps(self, row_id: str, mode: str) -> bool:
        return mode in self.whole or (row_id, mode) in self.formatted


def _first_by_key(entries: Iterable[tuple[str, str, str]], format_examples: int, seed: int) -> set[tuple[str, str]]:
    """``(id, mode)`` of the first ``format_examples`` entries ``(source, mode, id)`` of each
    ``(source, mode)`` group, ordered by the seeded hash of the id (ties: input order). Holds at
    most twice ``format_examples`` entries a group."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for source, mode, row_id in entries:
        kept = groups[source, mode]
        kept.append((_order_key(seed, row_id), row_id))
        if len(kept) >= 2 * format_examples + 64:
            kept.sort(key=lambda e: e[0])  # stable: equal keys keep input order
            del kept[format_examples:]
    out = set()
    for (_, mode), kept in groups.items():
        kept.sort(key=lambda e: e[0])
        out.update((row_id, mode) for _, row_id in kept[:format_examples])
    return out


def sft_selection(keys: Iterable[tuple[str, str, str]], mix: str, format_examples: int, seed: int,
                  captions: bool = True) -> SftSelection:
    """The :class:`SftSelection` of ``mix`` (paper figure 5) over rows given as ``(id, mode,
    source)`` keys: every row of the modes ``FULL_MODES[mix]``, plus ``format_examples`` rows of
    each other answering mode per source (format alignment), picked by a seeded hash of the id,
    plus every caption row if ``captions``."""
    if mix not in FULL_MODES:
        raise ValueError(f"mix must be one of {sorted(FULL_MODES)}, got {mix!r}")
    whole = frozenset(FULL_MODES[mix]) | ({CAPTION} if captions else set())
    entries = ((source, mode, row_id) for row_id, mode, source in keys if mode != CAPTION and mode not in whole)
    formatted = _first_by_key(entries, format_examples, seed) if format_examples > 0 else set()
    return SftSelection(whole, frozenset(formatted))


def mix_sft_rows(rows: Sequence[Mapping[str, Any]], sources: Mapping[str, str], mix: str, format_examples: int,
                 seed: int, captions: bool = True) -> list[dict[str, Any]]:
    """The rows of ``rows`` that :func:`sft_selection` keeps, in their input order."""
    keys = ((r["id"], r["mode"], sources.get(r["id"], "unknown")) for r in rows)
    selection = sft_selection(keys, mix, format_examples, seed, captions)
    return [dict(r) for r in rows if selection.keeps(r["id"], r["mode"])]


def _sources(run: RunDir) -> dict[str, str]:
    """Source of each example id (empty without an examples artifact): keys only, no images."""
    if run.manifest("examples") is None:
        return {}
    sources: dict[str, str] = {}
    for batch in iter_artifact(run, "examples", ["id", "source"], batch_rows=65536):
        sources.update(zip(batch.rows.column("id").to_pylist(), batch.rows.column("source").to_pylist()))
    return sources


def select_sft(run: RunDir, mix: str, format_examples: int, seed: int, *, captions: bool = True) -> SftSelection:
    """The :class:`SftSelection` of ``<run>/sft_data``, read from its ``id`` and ``mode`` columns only."""
    needs_sources = format_examples > 0 and any(m not in FULL_MODES.get(mix, ()) for m in ANSWER_MODES)
    sources = _sources(run) if needs_sources else {}

    def keys() -> Iterator[tuple[str, str, str]]:
        for batch in iter_artifact(run, "sft_data", ["id", "mode"], batch_rows=65536):
            for row_id, mode in zip(batch.rows.column("id").to_pylist(), batch.rows.column("mode").to_pylist()):
                yield row_id, mode, sources.get(row_id, "unknown")

    return sft_selection(keys(), mix, format_examples, seed, captions)


@dataclass(frozen=True)
class SftData:
    """What the check of ``sft_data`` found: rows in all, rows the mix selects, and per mode."""

    rows: int
    selected: int
    modes: dict[str, int]


def check_sft_data(run: RunDir, mix: str, format_examples: int, seed: int, *, captions: bool = True) -> SftData:
    """Check ``<run>/sft_data`` for training with ``mix`` (schema of every row, the image of
    every selected row), a batch at a time; a clear error at the first problem."""
    selection = select_sft(run, mix, format_examples, seed, captions=captions)
    rows, modes = 0, Counter()
    for batch in validated(iter_artifact(run, "sft_data"), "sft_data"):
        ids, batch_modes = batch.rows.column("id").to_pylist(), batch.rows.column("mode").to_pylist()
        keep = [selection.keeps(i, m) for i, m in zip(ids, batch_modes)]
        rows += batch.rows.num_rows
        check_images(batch, "sft_data", keep)
        modes.update(m for m, k in zip(batch_modes, keep) if k)
    if not rows:
        raise _no_rows(run, "sft_data")
    selected = sum(modes.values())
    if not selected:
        raise SchemaError("sft_data", f"mix={mix!r} with format_examples={format_examples} selects no rows of "
                          f"{rows}: use another mix or more format examples")
    logger.info("sft_data: %d of %d rows for mix %r (%s)", selected, rows, mix, dict(modes))
    return SftData(rows, selected, dict(modes))


def sft_batches(run: RunDir, selection: SftSelection) -> Iterator[pa.Table]:
    """The selected rows of ``<run>/sft_data`` (prompt, completion, image), a batch at a time."""
    for batch in iter_artifact(run, "sft_data", ["id", "mode", "prompt", "completion", "image"]):
        ids, modes = batch.rows.column("id").to_pylist(), batch.rows.column("mode").to_pylist()
        keep = pa.array([selection.keeps(i, m) for i, m in zip(ids, modes)], pa.bool_())
        yield pa.Table.from_batches([batch.rows]).filter(keep).select(SFT_SCHEMA.names)


def sft_training_dataset(run: RunDir, selection: SftSelection, directory: str) -> Dataset:
    """The selected SFT rows as a memory-mapped dataset in TRL's form (see :func:`sft_dataset`),
    written to ``directory``."""
    dataset = arrow_dataset(sft_batches(run, selection), SFT_SCHEMA, directory)
    dataset.set_transform(_sft_batch)
    return dataset


# --------------------------------------------------------------------------- DPO: pairs and reference


def check_pairs(run: RunDir) -> int:
    """Check ``<run>/pairs`` (schema, unique ``(id, pair_index)``, images, chosen unlike
    rejected), a batch at a time; the number of pairs."""
    keys, count = KeyCheck("pairs"), 0
    for batch in validated(iter_artifact(run, "pairs"), "pairs"):
        keys(batch)
        check_images(batch, "pairs")
        chosen, rejected = batch.rows.column("chosen").to_pylist(), batch.rows.column("rejected").to_pylist()
        for k, (good, bad) in enumerate(zip(chosen, rejected)):
            if good == bad:
                raise SchemaError("pairs", f"chosen and rejected are the same text (in {batch.part})",
                                  column="chosen", row=batch.start + k, row_id=batch.rows.column("id")[k].as_py())
        count += batch.rows.num_rows
    if not count:
        raise _no_rows(run, "pairs")
    return count


RefIndex = dict[tuple[str, int], tuple[float, float, float | None]]
"""``(id, pair_index) -> (chosen, rejected, chosen under the corrupted image or None)`` reference log-probs."""


def reference_index(rows: Iterable[Mapping[str, Any]]) -> RefIndex:
    """The :data:`RefIndex` of ``dpo_ref`` rows."""
    return {(r["id"], r["pair_index"]): (r["chosen_ref_logp"], r["rejected_ref_logp"], r.get("chosen_corrupt_ref_logp"))
            for r in rows}


def read_reference(run: RunDir) -> RefIndex:
    """The :data:`RefIndex` of ``<run>/dpo_ref`` (keys and floats: small beside the pairs)."""
    index: RefIndex = {}
    for batch in validated(iter_artifact(run, "dpo_ref", batch_rows=65536), "dpo_ref"):
        index.update(reference_index(batch.rows.to_pylist()))
    return index


def _missing_reference(key: tuple[str, int]) -> RunDirError:
    return RunDirError(f"dpo_ref has no reference log-probs for pair ({key[0]!r}, {key[1]}): delete <run>/dpo_ref "
                       "and rerun train_dpo to score the pairs again")


_NO_CORRUPT_REFERENCE = ("dpo_ref has no corrupted-image reference log-probs (the mDPO term): delete <run>/dpo_ref "
                         "and rerun train_dpo to score the pairs again")


def check_reference(run: RunDir, index: RefIndex, *, mdpo: bool) -> int:
    """Check that ``index`` (of ``<run>/dpo_ref``) covers every pair (and, for the mDPO term, has
    each pair's corrupted-image log-prob), reading only the pairs' keys; the number of pairs."""
    count = 0
    for batch in iter_artifact(run, "pairs", ["id", "pair_index"], batch_rows=65536):
        for key in zip(batch.rows.column("id").to_pylist(), batch.rows.column("pair_index").to_pylist()):
            ref = index.get(key)
            if ref is None:
                raise _missing_reference(key)
            if mdpo and ref[2] is None:
                raise RunDirError(_NO_CORRUPT_REFERENCE)
        count += batch.rows.num_rows
    return count


def attach_reference(pairs: Iterable[Mapping[str, Any]],
                     reference: Sequence[Mapping[str, Any]] | RefIndex) -> list[dict[str, Any]]:
    """``pairs`` with ``ref_chosen_logps`` / ``ref_rejected_logps`` (and ``ref_chosen_corrupt_logps``
    for pairs with a ``corrupt_image``) from ``dpo_ref`` rows or their :data:`RefIndex`."""
    index = reference if isinstance(reference, dict) else reference_index(reference)
    out = []
    for row in pairs:
        key = (row["id"], row["pair_index"])
        ref = index.get(key)
        if ref is None:
            raise _missing_reference(key)
        item = {**row, "ref_chosen_logps": ref[0], "ref_rejected_logps": ref[1]}
        if "corrupt_image" in row:
            if ref[2] is None:
                raise RunDirError(_NO_CORRUPT_REFERENCE)
            item["ref_chosen_corrupt_logps"] = ref[2]
        out.append(item)
    return out


def preference_batches(run: RunDir, index: RefIndex, mdpo_fraction: float | None = None) -> Iterator[pa.Table]:
    """The pairs with their reference log-probs (and, given ``mdpo_fraction``, their corrupted
    images: ``reasoner.training.mdpo``), a batch at a time, as the rows of :func:`preference_schema`."""
    from reasoner.training.mdpo import add_corrupt_images

    schema = preference_schema(mdpo_fraction is not None)
    for batch in iter_artifact(run, "pairs", ["id", "pair_index", "prompt", "chosen", "rejected", "image"]):
        rows = batch.rows.to_pylist()
        if mdpo_fraction is not None:
            rows = add_corrupt_images(rows, mdpo_fraction)
        rows = attach_reference(rows, index)
        yield pa.Table.from_pylist([{k: r[k] for k in schema.names} for r in rows], schema=schema)


def preference_training_dataset(run: RunDir, index: RefIndex, directory: str,
                                mdpo_fraction: float | None = None) -> Dataset:
    """The pairs as a memory-mapped dataset in TRL's preference form (see :func:`preference_dataset`),
    written to ``directory``."""
    dataset = arrow_dataset(preference_batches(run, index, mdpo_fraction), preference_schema(mdpo_fraction is not None),
                            directory)
    dataset.set_transform(_preference_batch)
    return dataset


# --------------------------------------------------------------------------- TRL's form


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


def sft_dataset(rows: Sequence[Mapping[str, Any]]) -> Dataset:
    """A ``datasets.Dataset`` of SFT rows (in memory: for a few rows, e.g. in tests) that yields
    TRL's conversational prompt/completion form (image decoded on access: TRL's vision collators
    process images batch by batch)."""
    from datasets import Dataset

    dataset = Dataset.from_dict({k: [r[k] for r in rows] for k in SFT_SCHEMA.names})
    dataset.set_transform(_sft_batch)
    return dataset


def preference_dataset(rows: Sequence[Mapping[str, Any]]) -> Dataset:
    """A ``datasets.Dataset`` of pairs (in memory: for a few rows) in TRL's conversational
    preference form, with the reference log-probs (``ref_chosen_logps``, ``ref_rejected_logps``)
    when the rows carry them."""
    from datasets import Dataset

    keys = ["prompt", "chosen", "rejected", "image"]
    keys += [k for k in ("corrupt_image", *REF_COLUMNS) if rows and k in rows[0]]
    dataset = Dataset.from_dict({k: [r[k] for r in rows] for k in keys})
    dataset.set_transform(_preference_batch)
    return dataset
