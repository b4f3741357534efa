"""Wiring shared by the job entrypoints: command line, logging, Ray start-up, step timing.

Every job is ``python -m jobs.<stage> --config <yaml> [key=value ...]``; with no ``--config`` the
embedded default (``jobs/configs/default.yaml``) is used. ``--help`` lists the config keys the
stage reads with their help text and defaults; ``--print-config`` shows the resolved config.

The terminal shows the job's own lines (stages, a progress line per long step, warnings, the
summary); everything else (Ray's progress bars, engine and worker logs) goes to a log file under
the run, ``<run>/logs/<job>-<time>.log`` (``jobs._console``); ``--verbose`` shows it all.
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

from jobs._console import CONSOLE_LOGGER, Console, format_table

from reasoner.config import ConfigError, RunConfig, config_hash, load_run_config
from reasoner.options import dump_yaml, iter_help
from reasoner.rundir import RunDir, RunDirError
from reasoner.schema import SchemaError

logger = logging.getLogger("jobs")
say = logging.getLogger(CONSOLE_LOGGER).info
"""A line for the terminal (and the log file): the job's own account of what it does."""

_console: Console | None = None  # the running job's console, for progress lines


class RecipeStop(RuntimeError):
    """A stage finished but left nothing the next stage can use: the message says why and the fix."""


def progress(label: str, poll: Callable[[], tuple[float, float | None]], unit: str = ""):
    """A context showing one updating progress line (``poll() -> (done, total)``) while a long step
    runs; nothing when the stage runs outside a job (a test calling its ``main``)."""
    if _console is None:
        return contextlib.nullcontext()
    return _console.progress(label, poll, unit=unit, interval=2.0)


def parts_poll(run: RunDir, artifact: str, per_part: int, total: int) -> Callable[[], tuple[float, float]]:
    """Progress of a stage that writes a Parquet part per ``per_part`` items: items done of ``total``."""
    start = len(run.parts(artifact))
    return lambda: (min(total, (len(run.parts(artifact)) - start) * per_part), total)


def training_poll(run: RunDir, stage: str) -> Callable[[], tuple[float, float | None]]:
    """Progress of a training stage: the step its rank 0 last wrote (``reasoner.training.metrics``)."""
    from reasoner.training.metrics import PROGRESS_DIR, progress_file

    name = progress_file(stage)
    with contextlib.suppress(OSError):  # a finished run's file would show its last step
        run.fs.delete_file(run.path(PROGRESS_DIR, name))

    def poll() -> tuple[float, float | None]:
        data = run.read_json(PROGRESS_DIR, name) or {}
        return data.get("step", 0), data.get("max_steps")

    return poll


def log_path(config: RunConfig, job: str) -> str:
    """Where the job's log goes: ``<run>/logs`` for a local run, the cache for a bucket's."""
    if "://" in config.run_dir:
        root = os.path.join(os.path.expanduser(config.cache_dir), "logs",
                            config.run_dir.replace("://", "_").replace("/", "_"))
    else:
        root = os.path.join(config.run_dir, "logs")
    return os.path.join(root, f"{job}-{time.strftime('%Y%m%d-%H%M%S')}.log")

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
        say("%s is complete with this config: skipped", run.path(artifact))
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
    return read_rows(run.fs, run.path(artifact), ids, rows_per_block)


def read_rows(fs, path: str, ids: Iterable[str], rows_per_block: int | None = None):
    """:func:`read_artifact_rows` of any Parquet file or directory ``path`` on the filesystem ``fs``."""
    import ray
    from ray.data.expressions import col

    ds = ray.data.read_parquet(path, filesystem=fs, file_extensions=["parquet"])
    ds = ds.filter(expr=col("id").is_in(sorted(ids)))
    return ds if rows_per_block is None else ds.repartition(target_num_rows_per_block=rows_per_block)


def select_ids(run: RunDir, split: str, limit: int | None = None) -> list[str]:
    """Ids of the run's examples of ``split``, sorted; with ``limit``, a fixed subset of that many
    that mixes sources and families (``reasoner.data.examples.subset``)."""
    import pyarrow.compute as pc

    from reasoner.data.examples import subset

    index = run.read_table("examples", columns=["id", "split"])
    return subset(index.filter(pc.equal(index.column("split"), split)).column("id").to_pylist(), limit)


def format_plan(config: RunConfig, result) -> str:
    """The plan as the terminal shows it: the cluster, a row a stage, then what cannot run."""
    c = config.cluster
    params = "unknown" if result.parameters is None else f"{result.parameters / 1e9:.3g}B" \
        if result.parameters >= 1e8 else f"{result.parameters / 1e6:.3g}M"
    capacity = f"{c.gpu_memory_gib:g} GiB a GPU" if c.gpus_per_node else f"{c.memory_gib:.0f} GiB a node"
    head = (f"cluster: {c.nodes} node(s) x {c.gpus_per_node} GPUs, {c.cpus} CPUs ({capacity}); "
            f"model: {params} parameters")
    table = format_table(
        ["stage", "runs as", "count", "GPUs each", "CPUs each", "TP", "dtype", "est. GiB", "notes"],
        [[r.stage, r.runs_as, r.count, f"{r.gpus:g}", f"{r.cpus:g}", r.tensor_parallel or "", r.dtype or "",
          "" if r.memory_gib is None else f"{r.memory_gib:.2f}", "; ".join(r.notes)] for r in result.stages])
    lines = [head, table]
    if result.problems:
        lines.append(f"cannot run ({len(result.problems)}):")
        lines += [f"  - {p}" for p in result.problems]
    else:
        lines.append("plan: every stage fits the declared cluster")
    return "\n".join(lines)


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
    parser.add_argument("--log-level", default="INFO", help="logging level of the log file (default INFO)")
    parser.add_argument("--plan", action="store_true",
                        help="print the resources each stage asks of the cluster the config declares (cluster.*) "
                             "and exit: 0 if it can run, 2 naming what cannot; reads no run directory, starts nothing")
    parser.add_argument("--debug", action="store_true",
                        help="on a failure, show the traceback on the terminal too (it is always in the log)")
    parser.add_argument("--verbose", action="store_true",
                        help="show every log line on the terminal (Ray, engines, workers) instead of only the job's")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. run_dir=runs/r1 examples.synthetic.num_items=500")
    args = parser.parse_args(argv)
    try:
        config = load_run_config(args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return config, args


def init_ray(config: RunConfig, progress_bars: bool = True) -> None:
    """Connect to the cluster (``ray job submit`` sets ``RAY_ADDRESS``) or start a local one.
    ``progress_bars=False`` turns off Ray Data's (the job shows its own progress lines)."""
    import ray

    if not progress_bars:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
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
        # "local": a cluster of its own, as the key's help says, even where `ray start` (or a test's
        # multi-node cluster) left this machine's current-cluster file; ray.init() would join that.
        kwargs["address"] = "local"
        if config.ray.num_cpus is not None:
            kwargs["num_cpus"] = config.ray.num_cpus
    ray.init(**kwargs)


def check_run_dir(run_dir: str, timeout_s: float = 30.0) -> None:
    """A ConfigError naming ``run_dir`` and the fix if a job cannot write there, before anything
    starts: a path that is a file or lies under one, one it may not create or write, a bucket it
    cannot reach. A local run directory is created (the job would create it anyway)."""
    import concurrent.futures
    import tempfile

    import pyarrow.fs as pafs

    if "://" in run_dir:
        def probe() -> None:
            fs, path = pafs.FileSystem.from_uri(run_dir)
            fs.get_file_info(path)

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            pool.submit(probe).result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise ConfigError(f"run_dir={run_dir!r}: no answer from the bucket in {timeout_s:.0f} s; check the URI, "
                              "the endpoint and the network") from None
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ValueError or ArrowInvalid
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"run_dir={run_dir!r}: cannot reach it ({first}); check the URI and the "
                              "credentials (AWS_ACCESS_KEY_ID, ... in the environment)") from None
        finally:
            pool.shutdown(wait=False)
        return
    path = os.path.abspath(os.path.expanduser(run_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"run_dir={run_dir!r} is a file, not a directory; give a directory to hold the run")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"run_dir={run_dir!r} lies under {parent}, which is a file; give a directory path")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"run_dir={run_dir!r} cannot be written ({reason}); choose a directory you can write, "
                          "or fix its permissions") from None


def run_job(stage: str, main: Callable[[RunConfig], Any], doc: str | None, sections: Sequence[str],
            argv: Sequence[str] | None = None, uses_ray: bool = True) -> None:
    """Parse the command line, set up logging (and Ray), and run ``main(config)``."""
    global _console
    config, args = parse_args(stage, doc, sections, argv)
    if args.print_config:
        sys.stdout.write(dump_yaml(config))
        return
    if args.plan:
        from reasoner.plan import plan

        result = plan(config, None if stage == "pipeline" else [stage])
        sys.stdout.write(format_plan(config, result) + "\n")
        raise SystemExit(0 if result.ok else 2)
    try:
        check_run_dir(config.run_dir)
    except ConfigError as e:
        sys.stderr.write(f"python -m jobs.{stage}: error: {e}\n")
        raise SystemExit(2) from None
    path = log_path(config, stage)
    try:
        with Console(path, quiet=not args.verbose, debug=args.debug) as console:
            console.setup_logging(args.log_level)
            _console = console
            say("%s on %s (log: %s)", stage, config.run_dir, path)
            if uses_ray:
                init_ray(config, progress_bars=args.verbose)
            try:
                main(config)
            except (ConfigError, RunDirError, SchemaError, RecipeStop) as e:
                # Errors about the user's config, run directory or data, or a recipe that cannot go
                # on: the message says what to do; a traceback would only bury it (in the log).
                logger.debug("traceback", exc_info=True)
                logger.error("%s stopped: %s", stage, e)
                raise SystemExit(1) from None
            finally:
                _console = None
                if uses_ray:
                    import ray

                    ray.shutdown()  # while the log file still takes the workers' last lines
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001 - the console printed one line and the log has the traceback
        raise SystemExit(1) from None
