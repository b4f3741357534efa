"""Stage build_pairs (C2): chosen/rejected pairs from the scored candidates, into ``<run>/pairs``.

    python -m jobs.build_pairs --config jobs/configs/default.yaml run_dir=runs/r1
    ray job submit --working-dir . -- python -m jobs.build_pairs --config jobs/configs/h100.yaml

Candidates were written a part per batch of questions, every candidate of a question in one
part; each candidates part is one Ray task here, making the pairs part of the same name (and its
``_stats-<part>.json``), so a rerun makes only the missing parts. Questions are kept when their
accuracy lies in [pairs.min_accuracy, pairs.max_accuracy]; responses are cut to
``pairs.max_response_tokens`` tokens of the sampled model's tokenizer; with
``pairs.min_chosen_samples=2`` only correct texts sampled at least twice are chosen. A part's task
reads only the images of the questions it pairs (``example_images``).
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


def example_images(run: RunDir, ids: set[str], batch_rows: int = 64) -> dict[str, bytes]:
    """The images of the examples ``ids``, reading the ``id`` column of every examples part and
    the images only of the row groups that hold one of them (a batch of rows at a time, keeping
    only the wanted rows). A ``RunDirError`` names an id that no example has."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from reasoner.rundir import RunDirError
    from reasoner.training.stream import READ_BUFFER

    images: dict[str, bytes] = {}
    wanted = pa.array(sorted(ids), pa.string())
    for part in run.parts("examples") if ids else ():
        with run.fs.open_input_file(run.path("examples", part)) as handle:
            reader = pq.ParquetFile(handle, buffer_size=READ_BUFFER, pre_buffer=False)
            for group in range(reader.num_row_groups):
                if not pc.any(pc.is_in(reader.read_row_group(group, columns=["id"]).column("id"), wanted)).as_py():
                    continue
                for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[group], columns=["id", "image"],
                                                 use_threads=False):
                    batch = batch.filter(pc.is_in(batch.column("id"), wanted))
                    images.update(zip(batch.column("id").to_pylist(), batch.column("image").to_pylist()))
        if len(images) == len(ids):
            break
    missing = sorted(ids - images.keys())
    if missing:
        raise RunDirError(f"{run.path('examples')} has no example {missing[0]!r} of the candidates "
                          f"({len(missing)} missing): the candidates were sampled from other examples")
    return images


@ray.remote(num_cpus=1)
def pair_part(run: RunDir, part: str, config: PairConfig, model_dir: str) -> dict:
    """Pairs of the questions in candidates part ``part``; returns its stats. Only the images of
    the questions that make pairs are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reasoner.models import load_processor
    from reasoner.models.inputs import tokenizer_of

    tokenizer = tokenizer_of(load_processor(model_dir)) if config.max_response_tokens else None
    candidates = pq.read_table(run.path("candidates", part), filesystem=run.fs).to_pylist()
    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in candidates:
        by_question[row["id"]].append(row)
    stats, rows = PairStats(), []
    for question_id in sorted(by_question):
        group = by_question[question_id]
        pairs, reason = build_pairs({"id": question_id, "image": None}, group, config, tokenizer)
        accuracy = sum(c["correct"] for c in group) / len(group)
        stats.add(accuracy, len(pairs), reason)
        rows.extend(pairs)
    if rows:
        images = example_images(run, {r["id"] for r in rows})
        for row in rows:
            row["image"] = images[row["id"]]
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
