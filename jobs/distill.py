"""Stage distill (A): teacher rationales kept where the teacher's answer is right, into ``<run>/sft_data``.

    python -m jobs.distill --config jobs/configs/default.yaml run_dir=runs/r1
    OPENAI_API_KEY=... ray job submit --working-dir . -- python -m jobs.distill --config jobs/configs/h100.yaml

Ray Data streams the examples of ``distill.split`` through ``distill.num_workers`` workers, each
calling the teacher with ``max_concurrency`` requests in flight. Every example ends as sft_data
rows (a CoT row if the rationale's answer is right, the ground-truth direct row, and a caption row
where the example has a caption, as the synthetic suite's do) or in
``<run>/rejected/distill`` with the reason. A spent request/token budget stops cleanly: the
examples not asked about stay pending, the stage is left incomplete, and a rerun finishes them.
"""

from __future__ import annotations

import logging
from collections import Counter

from reasoner.config import RunConfig, identity, to_dict
from reasoner.distill import STAGE, DistillWorker
from reasoner.rundir import RunDir, StageCounts
from reasoner.schema import MODES

from jobs._common import Timings, begin_stage, read_artifact_rows, run_job, say, select_ids

logger = logging.getLogger("jobs.distill")
ARTIFACT = "sft_data"


def main(config: RunConfig) -> None:
    import ray

    section, timings = config.distill, Timings()
    run = RunDir(config.run_dir)
    provenance = {"distill": identity(section), "examples_config_hash": run.require("examples")["config_hash"]}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    with timings.step("plan"):
        ids = select_ids(run, section.split, section.max_examples)
        finished = run.done_ids(ARTIFACT, STAGE)
        wanted = {i for i in ids if i not in finished}
        logger.info("%d %s examples, %d already done, %d to distill with teacher %r",
                    len(ids), section.split, len(ids) - len(wanted), len(wanted), section.teacher)
    pending = 0
    if wanted:
        with timings.step("distill"):
            summary = read_artifact_rows(run, "examples", wanted, section.examples_per_part).map_batches(
                DistillWorker, fn_constructor_kwargs={"run": run, "config": section},
                batch_size=section.examples_per_part, num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=section.num_workers),
            ).take_all()
            pending = sum(r["pending"] for r in summary)
            logger.info("asked about %d examples: %d rationales kept, %d rejected, %d pending",
                        sum(r["examples"] for r in summary), sum(r["kept"] for r in summary),
                        sum(r["rejected"] for r in summary), pending)
    if pending:
        logger.warning("the teacher budget ran out with %d examples pending: %s is incomplete; run the stage "
                       "again (with a new budget) to finish it", pending, run.path(ARTIFACT))
        return
    with timings.step("count"):
        table = run.read_table(ARTIFACT, columns=["mode"], require_complete=False)
        modes = Counter(table.column("mode").to_pylist())
        rows = {mode: modes[mode] for mode in MODES}
        rejected = run.rejected_count(STAGE)
    run.finish(ARTIFACT, stage=STAGE, config={**provenance, "distill": to_dict(section)}, config_hash=digest,
               counts=StageCounts(in_=len(ids), out=rows["cot"], rejected=rejected), seed=None,
               timings=timings, extra={"rows": rows})
    say("sft_data: %d CoT, %d direct and %d caption rows, %d examples rejected -> %s",
        rows["cot"], rows["direct"], rows["caption"], rejected, run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("distill", "ray"))
