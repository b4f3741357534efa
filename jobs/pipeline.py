"""The whole recipe, stage after stage, on one run directory.

    python -m jobs.pipeline --config jobs/configs/default.yaml
    python -m jobs.pipeline --config jobs/configs/default.yaml run_dir=runs/r2 stages=[make_examples]
    ray job submit --working-dir . -- python -m jobs.pipeline --config jobs/configs/default.yaml

Each stage is the same ``main`` as its own job (``python -m jobs.<stage>``), so a stage that is
already complete is skipped and an interrupted one resumes. ``stages`` picks a subset, in order.
"""

from __future__ import annotations

import importlib
import logging
import time

from reasoner.config import RunConfig

from jobs._common import run_job

logger = logging.getLogger("jobs.pipeline")


def main(config: RunConfig) -> None:
    began = time.perf_counter()
    for i, stage in enumerate(config.stages, 1):
        logger.info("=== stage %d/%d: %s", i, len(config.stages), stage)
        start = time.perf_counter()
        importlib.import_module(f"jobs.{stage}").main(config)
        logger.info("=== %s finished in %.1f s", stage, time.perf_counter() - start)
    logger.info("pipeline finished in %.1f s: %s", time.perf_counter() - began, config.run_dir)


if __name__ == "__main__":
    run_job("pipeline", main, __doc__, sections=())
