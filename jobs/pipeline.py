"""The whole recipe, stage after stage, on one run directory.

    python -m jobs.pipeline --config jobs/configs/default.yaml
    python -m jobs.pipeline --config jobs/configs/default.yaml run_dir=runs/r2 stages=[make_examples]
    ray job submit --working-dir . -- python -m jobs.pipeline --config jobs/configs/default.yaml

Each stage is the same ``main`` as its own job (``python -m jobs.<stage>``), so a stage that is
already complete is skipped and an interrupted one resumes. ``stages`` picks a subset, in order.
A stage that leaves nothing the next one can use (no CoT rows, no candidates, no pairs) stops the
pipeline there with the reason and the fix, rather than letting the next stage fail on an empty
input. The run ends with a table of every stage's rows in, out and rejected, and its time.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable

from reasoner.config import RunConfig
from reasoner.rundir import RunDir

from jobs._common import RecipeStop, run_job, say

logger = logging.getLogger("jobs.pipeline")

ARTIFACTS = {"make_examples": "examples", "init_model": "models/base", "distill": "sft_data",
             "train_sft": "models/sft", "sample": "candidates", "build_pairs": "pairs", "train_dpo": "models/dpo",
             "evaluate": "eval", "report": "report"}
"""The artifact each stage makes."""


def _examples(run: RunDir, config: RunConfig) -> str | None:
    import pyarrow.compute as pc

    splits = run.read_table("examples", columns=["split"]).column("split")
    wanted = {split for stage, split in (("distill", config.distill.split), ("sample", config.sample.split))
              if stage in config.stages}
    missing = [s for s in sorted(wanted) if not pc.any(pc.equal(splits, s)).as_py()]
    if missing:
        return (f"the examples have no {', '.join(map(repr, missing))} split, which distill and sample read; "
                "make more examples (examples.synthetic.num_items) or set distill.split / sample.split")
    return None


def _sft_data(run: RunDir, config: RunConfig) -> str | None:
    manifest = run.require("sft_data")
    if manifest["counts"]["out"] == 0 and config.sft.mix != "direct":
        return (f"the teacher's answers matched no ground truth: no CoT rows to train on "
                f"({manifest['counts']['rejected']} examples rejected, reasons in {run.path('rejected', 'distill')}); "
                "check distill.teacher and its answer format, or train on direct rows only (sft.mix=direct)")
    return None


def _candidates(run: RunDir, config: RunConfig) -> str | None:
    manifest = run.require("candidates")
    if not manifest.get("candidates"):
        return (f"sampling made no candidates ({manifest['counts']['rejected']} questions rejected, reasons in "
                f"{run.path('rejected', 'sample')})")
    return None


def _pairs(run: RunDir, config: RunConfig) -> str | None:
    manifest = run.require("pairs")
    if manifest.get("pairs"):
        return None
    dropped = ", ".join(f"{n} {bucket.replace('_', ' ')}" for bucket, n in manifest.get("dropped", {}).items() if n)
    p = config.pairs
    return (f"no question gave a chosen/rejected pair ({manifest['counts']['in']} questions: {dropped or 'none'}; "
            f"kept are those with an accuracy in [{p.min_accuracy}, {p.max_accuracy}] and a correct text sampled "
            f"{p.min_chosen_samples}+ times). Train SFT longer (sft.max_steps, sft.epochs) so more questions are "
            "sometimes right, sample more questions or candidates (sample.max_questions, sample.num_samples), or "
            "widen pairs.min_accuracy / pairs.max_accuracy; a changed section needs overwrite=true")


CHECKS: dict[str, Callable[[RunDir, RunConfig], str | None]] = {
    "make_examples": _examples, "distill": _sft_data, "sample": _candidates, "build_pairs": _pairs}
"""After a stage: the reason the recipe cannot go on from its artifact, or None."""


def summary_rows(run: RunDir, stages: list[str], seconds: dict[str, float]) -> list[list]:
    """One row a stage: its name, rows in, out and rejected (from its manifest), and this run's time."""
    rows = []
    for stage in stages:
        manifest = run.manifest(ARTIFACTS[stage]) or {}
        counts = manifest.get("counts", {})
        if stage == "build_pairs":  # what comes out of pairing is pairs, not questions kept
            counts = {**counts, "out": manifest.get("pairs", counts.get("out"))}
        if stage == "sample":
            counts = {**counts, "out": manifest.get("candidates", counts.get("out"))}
        rows.append([stage, counts.get("in"), counts.get("out"), counts.get("rejected"), seconds.get(stage)])
    return rows


def main(config: RunConfig) -> None:
    from jobs._console import format_duration, format_table

    run = RunDir(config.run_dir)
    began, seconds = time.perf_counter(), {}
    try:
        for i, stage in enumerate(config.stages, 1):
            complete = run.manifest(ARTIFACTS[stage]) is not None
            say("[%d/%d] %s%s", i, len(config.stages), stage, " (complete: checking the config)" if complete else "")
            start = time.perf_counter()
            importlib.import_module(f"jobs.{stage}").main(config)
            seconds[stage] = time.perf_counter() - start
            logger.info("%s finished in %.1f s", stage, seconds[stage])
            check = CHECKS.get(stage)
            reason = check(run, config) if check is not None and i < len(config.stages) else None
            if reason is not None:
                raise RecipeStop(f"the pipeline stops after {stage}: {reason}")
    finally:
        rows = summary_rows(run, [s for s in config.stages if s in seconds], seconds)
        if rows:
            say("\n%s", format_table(["stage", "in", "out", "rejected", "time (s)"], rows))
    say("the whole run took %s: %s", format_duration(time.perf_counter() - began), config.run_dir)
    if "train_dpo" in config.stages or "train_sft" in config.stages:
        say("serve it: serve run serve_apps.reason:build_app run_dir=%s%s", config.run_dir,
            "" if "train_dpo" in config.stages else " serve.generator=models/sft serve.verifier=models/sft")


if __name__ == "__main__":
    run_job("pipeline", main, __doc__, sections=())
