"""Stage sample (C1): many CoT candidates per train question from the SFT model, into ``<run>/candidates``.

    python -m jobs.sample --config jobs/configs/default.yaml run_dir=runs/r1
    ray job submit --working-dir . -- python -m jobs.sample --config jobs/configs/h100.yaml run_dir=s3://bucket/r1

Ray Data streams the examples of ``sample.split`` through an actor pool of vLLM engines
(``sample.num_engines``, each built and placed as the run's ``engine`` section says); every batch
of ``questions_per_part`` questions becomes one Parquet part, its candidates and its rejections
committed together. A rerun samples only the questions that have neither candidates nor a
rejection in a committed part yet.
"""

from __future__ import annotations

import logging
import os

import pyarrow.compute as pc

from reasoner.config import RunConfig, identity, to_dict
from reasoner.models.engine import engine_kwargs, ray_options
from reasoner.rundir import RunDir, StageCounts
from reasoner.sampling import SampleWorker

from jobs._common import Timings, begin_stage, parts_poll, progress, read_artifact_rows, run_job, say, select_ids

logger = logging.getLogger("jobs.sample")
STAGE, ARTIFACT = "sample", "candidates"


def main(config: RunConfig) -> None:
    import ray

    section, timings = config.sample, Timings()
    run = RunDir(config.run_dir)
    model_manifest = run.require(section.model)
    provenance = {"sample": identity(section), "model_config_hash": model_manifest["config_hash"],
                  "examples_config_hash": (run.manifest("examples") or {}).get("config_hash")}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    with timings.step("plan"):
        ids = select_ids(run, section.split, section.max_questions)
        finished = run.done_ids(ARTIFACT, STAGE)
        todo = [i for i in ids if i not in finished]
        logger.info("%d %s questions, %d already done, %d to sample (%d candidates each)",
                    len(ids), section.split, len(ids) - len(todo), len(todo), section.num_samples)
    if todo:
        with timings.step("sample"), progress("sample", parts_poll(run, ARTIFACT, section.questions_per_part,
                                                                    len(todo)), unit="questions"):
            model_dir = run.local_path(section.model, cache_dir=os.path.expanduser(config.cache_dir))
            summary = read_artifact_rows(run, "examples", todo, section.questions_per_part).map_batches(
                SampleWorker,
                fn_constructor_kwargs={"run": run, "model_dir": model_dir, "config": section,
                                       "engine": engine_kwargs(config.engine)},
                batch_size=section.questions_per_part,
                compute=ray.data.ActorPoolStrategy(size=section.num_engines),
                **ray_options(config.engine),
            ).take_all()
            made = sum(r["candidates"] for r in summary)
            logger.info("sampled %d candidates for %d questions (%d correct); %d questions rejected",
                        made, sum(r["questions"] for r in summary), sum(r["correct"] for r in summary),
                        sum(r["rejected"] for r in summary))
    with timings.step("count"):
        done = run.done_ids(ARTIFACT, STAGE)  # settles any part a dead worker left half-written
        pending = sum(i not in done for i in ids)
        table = run.read_table(ARTIFACT, columns=["id", "correct"], require_complete=False)
        questions = len(set(table.column("id").to_pylist()))
        rejected = run.rejected_count(STAGE)
        accuracy = pc.mean(table.column("correct").cast("float64")).as_py() if table.num_rows else None
    extra = {"candidates": table.num_rows, "mean_accuracy": accuracy}
    if pending:
        extra["resume"] = (f"{pending} of {len(ids)} questions not sampled: run the sample stage again "
                           f"(run_dir={run.uri}) to sample them")
    run.finish(ARTIFACT, stage=STAGE, config={**provenance, "sample": to_dict(section)}, config_hash=digest,
               counts=StageCounts(in_=len(ids), out=questions, rejected=rejected, pending=pending),
               seed=section.seed, timings=timings, extra=extra)
    if pending:
        logger.warning("%s is incomplete: %s", run.path(ARTIFACT), extra["resume"])
        return
    say("candidates: %d for %d questions, mean accuracy %s -> %s", table.num_rows, questions,
        None if accuracy is None else f"{accuracy:.3f}", run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("sample", "engine", "ray"))
