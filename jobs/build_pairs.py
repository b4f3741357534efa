"""Stage build_pairs (C2): chosen/rejected pairs from the scored candidates, into ``<run>/pairs``.

    python -m jobs.build_pairs --config jobs/configs/default.yaml run_dir=runs/r1
    ray job submit --working-dir . -- python -m jobs.build_pairs --config jobs/configs/h100.yaml

Candidates were written a part per batch of questions, every candidate of a question in one
part; each candidates part is one Ray task here, making the pairs part of the same name (and its
``_stats-<part>.json``), so a rerun makes only the missing parts. Questions are kept when their
accuracy lies in [pairs.min_accuracy, pairs.max_accuracy]; responses are cut to
``pairs.max_response_tokens`` tokens of the sampled model's tokenizer; with
``pairs.min_chosen_samples=2`` only correct texts sampled at least twice are chosen.
``<run>/pairs/_stats.json`` holds the counts: kept, dropped by reason, the accuracy histogram.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import ray

from reasoner.config import RunConfig, to_dict
from reasoner.pairs import PairConfig, PairStats, build_pairs
from reasoner.rundir import RunDir, StageCounts

from jobs._common import Timings, begin_stage, run_job, say

logger = logging.getLogger("jobs.build_pairs")
STAGE, ARTIFACT = "build_pairs", "pairs"


@ray.remote(num_cpus=1)
def pair_part(run: RunDir, part: str, config: PairConfig, model_dir: str) -> dict:
    """Pairs of the questions in candidates part ``part``; returns its stats."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from reasoner.models import load_processor
    from reasoner.models.inputs import tokenizer_of

    tokenizer = tokenizer_of(load_processor(model_dir)) if config.max_response_tokens else None
    candidates = pq.read_table(run.path("candidates", part), filesystem=run.fs).to_pylist()
    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in candidates:
        by_question[row["id"]].append(row)
    examples = run.read_table("examples", columns=["id", "image"])
    examples = examples.filter(pc.is_in(examples.column("id"), pa.array(sorted(by_question))))
    images = dict(zip(examples.column("id").to_pylist(), examples.column("image").to_pylist()))
    stats, rows = PairStats(), []
    for question_id in sorted(by_question):
        group = by_question[question_id]
        example = {"id": question_id, "image": images[question_id]}
        pairs, reason = build_pairs(example, group, config, tokenizer)
        accuracy = sum(c["correct"] for c in group) / len(group)
        stats.add(accuracy, len(pairs), reason)
        rows.extend(pairs)
    if rows:
        run.write_part(ARTIFACT, part.removesuffix(".parquet"), pa.Table.from_pylist(rows), schema_name="pairs")
    run.write_json(stats.to_dict(), ARTIFACT, f"_stats-{part.removesuffix('.parquet')}.json")
    return stats.to_dict()


def main(config: RunConfig) -> None:
    section, timings = config.pairs, Timings()
    run = RunDir(config.run_dir)
    sampled = run.require("candidates")
    provenance = {"pairs": to_dict(section), "candidates_config_hash": sampled["config_hash"]}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    model_artifact = sampled["config"]["sample"]["model"]
    model_dir = run.local_path(model_artifact, cache_dir=os.path.expanduser(config.cache_dir))
    parts = run.parts("candidates")
    todo = [p for p in parts if run.read_json(ARTIFACT, f"_stats-{p.removesuffix('.parquet')}.json") is None]
    logger.info("%d candidate parts, %d to pair (tokenizer of %s)", len(parts), len(todo), model_artifact)
    with timings.step("pair"):
        pending = [pair_part.remote(run, p, section, model_dir) for p in todo]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready[0])
            logger.info("parts %d/%d paired", len(todo) - len(pending), len(todo))
    stats = PairStats()
    for p in parts:
        stats = stats.merge(PairStats.from_dict(run.read_json(ARTIFACT, f"_stats-{p.removesuffix('.parquet')}.json")))
    run.write_json(stats.to_dict(), ARTIFACT, "_stats.json")
    if not run.parts(ARTIFACT):
        logger.warning("no question had an accuracy in [%s, %s]: no pairs (see %s)", section.min_accuracy,
                       section.max_accuracy, run.path(ARTIFACT, "_stats.json"))
    run.finish(ARTIFACT, stage=STAGE, config=provenance, config_hash=digest,
               counts=StageCounts(in_=stats.questions, out=stats.kept), seed=section.seed, timings=timings,
               extra={"pairs": stats.pairs, "dropped": stats.dropped, "histogram": stats.histogram})
    say("pairs: %d from %d of %d questions (dropped: %s) -> %s", stats.pairs, stats.kept,
        stats.questions, stats.dropped, run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("pairs", "ray"))
