"""Stage distill (A): teacher rationales kept where the teacher's answer is right, into ``<run>/sft_data``.

    python -m jobs.distill --config jobs/configs/default.yaml run_dir=runs/r1
    OPENAI_API_KEY=... ray job submit --working-dir . -- python -m jobs.distill --config jobs/configs/h100.yaml

Ray Data streams the examples of ``distill.split`` through ``distill.num_workers`` workers, each
calling the teacher with ``max_concurrency`` requests in flight. Every example ends as sft_data
rows (a CoT row if the rationale's answer is right, the ground-truth direct row, and a caption row
where the example has a caption, as the synthetic suite's do) or in
``<run>/rejected/distill`` with the reason; a batch's rows and rejections commit together.

Nothing is lost to a passing fault: an example whose request failed after the retries (429, 5xx,
timeouts) or found the budget spent stays pending; the stage then writes ``_progress.json`` (the
counts, pending included) instead of its manifest, says how many are pending, and a rerun asks
about them again (``distill.give_up_pending=true`` rejects them instead). The request and token
budget (``distill.max_requests``, ``distill.max_tokens_budget``) is the run's: one actor holds its
ledger, ``<run>/_budget/distill.json``, for every worker, restart and rerun.
"""

from __future__ import annotations

import logging
from collections import Counter

from reasoner.config import RunConfig, identity, to_dict
from reasoner.distill import STAGE, DistillConfig, DistillWorker
from reasoner.rundir import RunDir, StageCounts
from reasoner.schema import MODES
from reasoner.teacher import DurableBudget, SharedBudget

from jobs._common import Timings, begin_stage, read_artifact_rows, run_job, say, select_ids

logger = logging.getLogger("jobs.distill")
ARTIFACT = "sft_data"


def budget_actor(run: RunDir, section: DistillConfig):
    """The Ray actor holding the run's teacher budget, or None when there is no limit to keep."""
    import ray

    if section.teacher != "openai" or (section.max_requests is None and section.max_tokens_budget is None):
        return None
    # One call at a time (max_concurrency=1): reserve and write down, then answer the next.
    keeper = ray.remote(DurableBudget).options(num_cpus=0, max_concurrency=1, max_restarts=-1, max_task_retries=-1)
    return keeper.remote(run, STAGE, section.max_requests, section.max_tokens_budget)


def pending_message(run: RunDir, section: DistillConfig, pending: int, total: int, summary: list[dict]) -> str:
    """What is pending and why, and how to finish the stage."""
    spent, failed = (sum(r[key] for r in summary) for key in ("pending_budget", "pending_transport"))
    why = []
    if spent:
        ledger = run.read_json(*DurableBudget.ledger_parts(STAGE)) or {}
        used = [f"{ledger.get(key, 0)} {unit} of distill.{name}={limit}" for key, unit, name, limit in (
            ("requests", "requests", "max_requests", section.max_requests),
            ("tokens", "tokens", "max_tokens_budget", section.max_tokens_budget)) if limit is not None]
        why.append(f"{spent} not sent: the teacher budget is spent ({', '.join(used)}; kept in "
                   f"{run.path(*DurableBudget.ledger_parts(STAGE))})")
    if failed:
        why.append(f"{failed} after transport failures that outlasted the retries (429, 5xx, timeouts)")
    return (f"{pending} of {total} examples pending ({'; '.join(why) or 'not asked yet'}): run the distill stage "
            f"again (run_dir={run.uri}) to ask again{', with a higher budget' if spent else ''}, or set "
            "distill.give_up_pending=true to reject them")


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
    summary: list[dict] = []
    if wanted:
        with timings.step("distill"):
            keeper = budget_actor(run, section)
            try:
                summary = read_artifact_rows(run, "examples", wanted, section.examples_per_part).map_batches(
                    DistillWorker, batch_size=section.examples_per_part, num_cpus=1,
                    fn_constructor_kwargs={"run": run, "config": section,
                                           "budget": None if keeper is None else SharedBudget(keeper)},
                    compute=ray.data.ActorPoolStrategy(size=section.num_workers),
                ).take_all()
            finally:
                if keeper is not None:
                    ray.kill(keeper)
            logger.info("asked about %d examples: %d rationales kept, %d rejected, %d pending",
                        sum(r["examples"] for r in summary), sum(r["kept"] for r in summary),
                        sum(r["rejected"] for r in summary),
                        sum(r["pending_budget"] + r["pending_transport"] for r in summary))
    with timings.step("count"):
        done = run.done_ids(ARTIFACT, STAGE)  # settles any part a dead worker left half-written
        pending = sum(i not in done for i in ids)
        modes = Counter()
        if run.parts(ARTIFACT):
            modes.update(run.read_table(ARTIFACT, columns=["mode"], require_complete=False).column("mode").to_pylist())
        rows = {mode: modes[mode] for mode in MODES}
        rejected = run.rejected_count(STAGE)
    extra = {"rows": rows, "budget": run.read_json(*DurableBudget.ledger_parts(STAGE))}
    if pending:
        extra["resume"] = pending_message(run, section, pending, len(ids), summary)
    run.finish(ARTIFACT, stage=STAGE, config={**provenance, "distill": to_dict(section)}, config_hash=digest,
               counts=StageCounts(in_=len(ids), out=rows["cot"], rejected=rejected, pending=pending), seed=None,
               timings=timings, extra=extra)
    if pending:
        logger.warning("%s is incomplete: %s", run.path(ARTIFACT), extra["resume"])
        return
    say("sft_data: %d CoT, %d direct and %d caption rows, %d examples rejected -> %s",
        rows["cot"], rows["direct"], rows["caption"], rejected, run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("distill", "ray"))
