"""Wiring shared by the job entrypoints: command line, logging, Ray start-up, step timing.

Every job is ``python -m jobs.<stage> --config <yaml> [key=value ...]``; with no ``--config`` the
embedded default (``jobs/configs/default.yaml``) is used. ``--help`` lists the config keys the
stage reads with their help text and defaults; ``--print-config`` shows the resolved config.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from reasoner.config import ConfigError, RunConfig, config_hash, load_run_config
from reasoner.options import dump_yaml, iter_help
from reasoner.rundir import RunDir, RunDirError
from reasoner.schema import SchemaError

logger = logging.getLogger("jobs")

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.yaml")


class Timings(dict):
    """Seconds spent per named step, for the log and the manifest (as verl's ``marked_timer``)."""

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        logger.info("%s ...", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 3)
            logger.info("%s done in %.1f s", name, self[name])


def begin_stage(run: RunDir, artifact: str, stage: str, provenance: dict[str, Any], overwrite: bool) -> str | None:
    """Begin (or resume) a stage on ``run``: the hash of ``provenance`` (what decides the artifact's
    content), or None when the artifact is already complete with it (the stage has nothing to do)."""
    digest = config_hash(provenance)
    if not run.begin(artifact, provenance, digest, stage=stage, overwrite=overwrite):
        logger.info("%s is complete with this config; nothing to do", run.path(artifact))
        return None
    return digest


def read_artifact_rows(run: RunDir, artifact: str, ids: Iterable[str], rows_per_block: int | None = None):
    """A Ray dataset of the rows of ``artifact`` whose ``id`` is in ``ids`` (filtered in Arrow).

    ``rows_per_block``: cut the blocks to at most that many rows, the batch size of a stage that
    writes a part per batch. Ray Data may read many small files into one block, and a ``map_batches``
    task takes a whole block: without the cut one task would sample every question, so an actor
    pool of N engines would use one, and a run longer than 30 min would fail on Ray Data's
    no-progress timeout (a task's outputs count only when it ends).
    """
    import ray
    from ray.data.expressions import col

    ds = ray.data.read_parquet(run.path(artifact), filesystem=run.fs, file_extensions=["parquet"])
    ds = ds.filter(expr=col("id").is_in(sorted(ids)))
    return ds if rows_per_block is None else ds.repartition(target_num_rows_per_block=rows_per_block)


def select_ids(run: RunDir, split: str, limit: int | None = None) -> list[str]:
    """Ids of the run's examples of ``split``, sorted; with ``limit``, a fixed subset of that many
    that mixes sources and families (``reasoner.data.examples.subset``)."""
    import pyarrow.compute as pc

    from reasoner.data.examples import subset

    index = run.read_table("examples", columns=["id", "split"])
    return subset(index.filter(pc.equal(index.column("split"), split)).column("id").to_pylist(), limit)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def _help_epilog(sections: Sequence[str]) -> str:
    lines = ["config keys (override any as key=value; nested keys with dots):"]
    for key, type_name, default, text in iter_help(RunConfig):
        top = key.split(".", 1)[0]
        if sections and "." in key and top not in sections:
            continue
        lines.append(f"  {key} ({type_name}, default {default!r})")
        if text:
            lines.append(f"      {text}")
    return "\n".join(lines)


def parse_args(stage: str, doc: str | None, sections: Sequence[str], argv: Sequence[str] | None) -> tuple[RunConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog=f"python -m jobs.{stage}",
        description=doc,
        epilog=_help_epilog(sections),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="run config YAML (default: the embedded default, jobs/configs/default.yaml)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. run_dir=runs/r1 examples.synthetic.num_items=500")
    args = parser.parse_args(argv)
    try:
        config = load_run_config(args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return config, args


def init_ray(config: RunConfig) -> None:
    """Connect to the cluster (``ray job submit`` sets ``RAY_ADDRESS``) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if config.ray.address:
        kwargs["address"] = config.ray.address
    elif not os.environ.get("RAY_ADDRESS"):
        # A local cluster. It runs the dashboard (on 127.0.0.1) because Ray's state API lives
        # there, and Ray Train polls it every second to clean up after a dead controller:
        # without it every training stage logs a warning a second.
        kwargs["include_dashboard"] = True
        if config.ray.num_cpus is not None:
            kwargs["num_cpus"] = config.ray.num_cpus
    ray.init(**kwargs)


def run_job(stage: str, main: Callable[[RunConfig], Any], doc: str | None, sections: Sequence[str],
            argv: Sequence[str] | None = None, uses_ray: bool = True) -> None:
    """Parse the command line, set up logging (and Ray), and run ``main(config)``."""
    config, args = parse_args(stage, doc, sections, argv)
    if args.print_config:
        sys.stdout.write(dump_yaml(config))
        return
    setup_logging(args.log_level)
    if uses_ray:
        init_ray(config)
    try:
        main(config)
    except (ConfigError, RunDirError, SchemaError) as e:
        # Errors about the user's config, run directory or data: the message says what to do;
        # a traceback would only bury it (it is logged at DEBUG).
        logger.debug("traceback", exc_info=True)
        logger.error("%s failed: %s", stage, e)
        raise SystemExit(1) from None
