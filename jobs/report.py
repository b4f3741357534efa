"""Stage report: the run's tables and figures from its saved results, into ``<run>/report``.

    python -m jobs.report --config jobs/configs/default.yaml run_dir=runs/r1

Reads ``eval/`` (eval.json and the pool), ``models/sft`` and ``models/dpo``'s ``metrics.jsonl``
and every artifact's ``_manifest.json``; loads no model and starts no Ray (``reasoner.report``).
Writes ``report.md``, a self-contained ``report.html`` (open it in a browser) and the figures
``accuracy.png`` (Tables 2 and 6 of the paper), ``reranking.png`` (Figures 6-7), ``credit.png``
(Figure 8, or its fallback) and ``training.png``. Its provenance is the evaluation's config
hash: after a new evaluation the report is rebuilt (with ``overwrite=true``).
"""

from __future__ import annotations

import logging

from reasoner.config import RunConfig
from reasoner.rundir import RunDir, StageCounts

from jobs._common import Timings, begin_stage, run_job, say

logger = logging.getLogger("jobs.report")
STAGE, ARTIFACT = "report", "report"


def main(config: RunConfig) -> None:
    from reasoner.report import build_report, eval_manifest

    run, timings = RunDir(config.run_dir), Timings()
    provenance = {"eval_config_hash": eval_manifest(run)["config_hash"]}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    with timings.step("report"):
        summary = build_report(run, ARTIFACT)
    run.finish(ARTIFACT, stage=STAGE, config=provenance, config_hash=digest,
               counts=StageCounts(in_=summary["questions"] or 0, out=len(summary["files"])), timings=timings,
               extra={"files": sorted(summary["files"]), "notes": summary["notes"]})
    for note in summary["notes"]:
        say("report: %s", note)
    say("report: %s", summary["markdown"])
    say("report: %s", summary["html"])


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("ray",), uses_ray=False)
