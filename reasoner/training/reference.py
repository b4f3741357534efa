"""The DPO reference pass: log-probs of every pair's chosen and rejected response under the
reference model (the SFT model), computed once into ``<run>/dpo_ref``.

It scores through the shared log-prob scorer (``reasoner.models``: transformers or vLLM), whose
tokenisation is the one TRL's vision DPO collator uses: the chat-templated prompt (image, then
text; generation prompt) tokenised without special tokens, the response tokenised on its own,
then EOS (the template ends an assistant turn with EOS and nothing after it). Totals are summed
over the response tokens, EOS included, as TRL's ``_compute_loss`` sums them; a test checks the
two agree. Training then holds no reference model (``reasoner.training.dpo``).

Pairs are scored in parts of ``PART_SIZE`` named by their keys, so an interrupted pass resumes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from reasoner.models.scorer import LogProbScorer, ScoreRequest
from reasoner.training.mdpo import CORRUPT_IMAGE, CORRUPT_REF
from reasoner.rundir import RunDir

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


def reference_pass(run: RunDir, pairs: Sequence[dict[str, Any]], scorer: LogProbScorer,
                   part_size: int = PART_SIZE) -> int:
    """Score the pairs that ``<run>/dpo_ref`` lacks, a part at a time; returns the pairs scored."""
    done: set[tuple[str, int]] = set()
    if run.parts(ARTIFACT):
        table = run.read_table(ARTIFACT, columns=["id", "pair_index"], require_complete=False)
        done = set(zip(table.column("id").to_pylist(), table.column("pair_index").to_pylist()))
    todo = [p for p in pairs if (p["id"], p["pair_index"]) not in done]
    logger.info("reference pass: %d pairs, %d already scored, %d to score", len(pairs), len(pairs) - len(todo),
                len(todo))
    for start in range(0, len(todo), part_size):
        chunk = todo[start:start + part_size]
        rows = score_pairs(scorer, chunk)
        name = _part_name([(p["id"], p["pair_index"]) for p in chunk])
        run.write_part(ARTIFACT, name, pa.Table.from_pylist(rows), schema_name=ARTIFACT)
        logger.info("reference pass: %d/%d pairs scored", start + len(chunk), len(todo))
    return len(todo)
