"""The DPO reference pass: log-probs of every pair's chosen and rejected response under the
reference model (the SFT model), computed once into ``<run>/dpo_ref``.

It scores through the shared log-prob scorer (``reasoner.models``: transformers or vLLM), whose
tokenisation is the one TRL's vision DPO collator uses: the chat-templated prompt (image, then
text; generation prompt) tokenised without special tokens, the response tokenised on its own,
then EOS (the template ends an assistant turn with EOS and nothing after it). Totals are summed
over the response tokens, EOS included, as TRL's ``_compute_loss`` sums them; a test checks the
two agree. Training then holds no reference model (``reasoner.training.dpo``).

The pass streams the pairs (``reasoner.training.stream``): it reads ``BATCH_ROWS`` pairs at a
time, images included, scores those not yet in ``<run>/dpo_ref`` and keeps only their log-probs,
writing a part of ``PART_SIZE`` pairs, named by their keys, whenever it has that many; an
interrupted pass resumes from the parts written.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from reasoner.models.scorer import LogProbScorer, ScoreRequest
from reasoner.rundir import RunDir
from reasoner.training.mdpo import CORRUPT_IMAGE, CORRUPT_REF, add_corrupt_images
from reasoner.training.stream import BATCH_ROWS, iter_artifact

logger = logging.getLogger(__name__)

ARTIFACT = "dpo_ref"
PART_SIZE = 256


def _part_name(keys: Sequence[tuple[str, int]]) -> str:
    digest = hashlib.sha256("\n".join(f"{i}\t{k}" for i, k in keys).encode()).hexdigest()[:16]
    return f"part-{digest}"


def score_pairs(scorer: LogProbScorer, pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``dpo_ref`` rows of ``pairs``: the summed reference log-probs of chosen and rejected (and,
    for pairs with a ``corrupt_image``, of chosen under it: ``chosen_corrupt_ref_logp``, mDPO)."""
    corrupt = bool(pairs) and CORRUPT_IMAGE in pairs[0]
    requests = []
    for pair in pairs:
        requests += [ScoreRequest(pair["image"], pair["prompt"], pair["chosen"]),
                     ScoreRequest(pair["image"], pair["prompt"], pair["rejected"])]
        if corrupt:
            requests.append(ScoreRequest(pair[CORRUPT_IMAGE], pair["prompt"], pair["chosen"]))
    scores = iter(scorer.score(requests))
    rows = []
    for pair in pairs:
        row = {"id": pair["id"], "pair_index": pair["pair_index"], "chosen_ref_logp": next(scores).total,
               "rejected_ref_logp": next(scores).total}
        if corrupt:
            row[CORRUPT_REF] = next(scores).total
        rows.append(row)
    return rows


PAIR_COLUMNS = ["id", "pair_index", "prompt", "image", "chosen", "rejected"]


def reference_pass(run: RunDir, scorer: LogProbScorer, *, mdpo_fraction: float | None = None,
                   part_size: int = PART_SIZE, batch_rows: int = BATCH_ROWS) -> int:
    """Score the pairs of ``<run>/pairs`` that ``<run>/dpo_ref`` lacks (with ``mdpo_fraction``,
    also each chosen response under its corrupted image), ``batch_rows`` pairs at a time, into parts
    of ``part_size``; returns the pairs scored."""
    done: set[tuple[str, int]] = set()
    if run.parts(ARTIFACT):
        table = run.read_table(ARTIFACT, columns=["id", "pair_index"], require_complete=False)
        done = set(zip(table.column("id").to_pylist(), table.column("pair_index").to_pylist()))
    logger.info("reference pass: %d pairs already scored", len(done))
    pending: list[dict[str, Any]] = []
    scored = seen = 0

    def write(rows: list[dict[str, Any]]) -> None:
        name = _part_name([(r["id"], r["pair_index"]) for r in rows])
        run.write_part(ARTIFACT, name, pa.Table.from_pylist(rows), schema_name=ARTIFACT)
        logger.info("reference pass: %d pairs scored (%d read)", scored, seen)

    for batch in iter_artifact(run, "pairs", PAIR_COLUMNS, batch_rows=batch_rows):
        seen += batch.rows.num_rows
        keys = zip(batch.rows.column("id").to_pylist(), batch.rows.column("pair_index").to_pylist())
        todo = [k for k, key in enumerate(keys) if key not in done]
        if not todo:
            continue
        pairs = batch.rows.take(todo).to_pylist()
        if mdpo_fraction is not None:
            pairs = add_corrupt_images(pairs, mdpo_fraction)
        pending += score_pairs(scorer, pairs)
        scored += len(pairs)
        while len(pending) >= part_size:
            write(pending[:part_size])
            del pending[:part_size]
    if pending:
        write(pending)
    logger.info("reference pass: %d of %d pairs scored, %d were already", scored, seen, seen - scored)
    return scored
