"""Stage make_examples: the run's examples (the synthetic suite or real datasets) into ``<run>/examples``.

    python -m jobs.make_examples --config jobs/configs/default.yaml run_dir=runs/r1
    ray job submit --working-dir . -- python -m jobs.make_examples --config jobs/configs/default.yaml

Synthetic: each part of each split (``examples.items_per_part`` items) is one Ray task that renders
its items into ``<run>/examples/<split>-<k>.parquet``; a rerun makes only the missing parts.
Datasets: each (dataset, split) is one Ray task reading the release and writing
``<dataset>-<split>-<k>.parquet`` parts; records it cannot use go to ``<run>/rejected/make_examples``
with the reason. A split whose task finished is not read again.
"""

from __future__ import annotations

import hashlib
import logging

import ray

from reasoner.config import DatasetSource, RunConfig, to_dict
from reasoner.data.synthetic import SPLITS, SuiteConfig, generate_items, split_sizes
from reasoner.rundir import RunDir, RunDirError, StageCounts

from jobs._common import Timings, begin_stage, run_job, say

logger = logging.getLogger("jobs.make_examples")
STAGE, ARTIFACT = "make_examples", "examples"


@ray.remote(num_cpus=1)
def make_part(run: RunDir, suite: SuiteConfig, split: str, start: int, count: int, part: str) -> int:
    """Render items ``start..start+count`` of ``split`` into the part file; return their number."""
    import pyarrow as pa

    items = generate_items(suite, split, start, count)
    run.write_part(ARTIFACT, part, pa.Table.from_pylist(items), schema_name="examples")
    return len(items)


@ray.remote(num_cpus=1)
def read_split(run: RunDir, source: DatasetSource, split: str, items_per_part: int) -> int:
    """Read one split of a dataset into parts (and rejected rows); return the rows written."""
    import pyarrow as pa

    from reasoner.data.readers import Rejected, read_dataset

    prefix = f"{source.name}-{split}"
    rejected, rows, k, made, refused = run.rejected(STAGE), [], 0, 0, 0

    def flush() -> None:
        nonlocal rows, k, made, refused
        part = f"{prefix}-{k:05d}"
        if rows:
            run.write_part(ARTIFACT, part, pa.Table.from_pylist(rows), schema_name="examples")
        made, refused, rows, k = made + len(rows), refused + rejected.flush(part), [], k + 1

    for item in read_dataset(source.name, source.path, split, limit=source.limit, **source.options):
        if isinstance(item, Rejected):
            rejected.add(item.row, item.reason)
        else:
            rows.append(item)
        if len(rows) + len(rejected) >= items_per_part:
            flush()
    flush()
    run.write_json({"rows": made, "rejected": refused}, ARTIFACT, f"_done-{prefix}.json")
    logger.info("%s %s: %d rows, %d rejected", source.name, split, made, refused)
    return made


def plan(suite: SuiteConfig, items_per_part: int) -> list[tuple[str, int, int, str]]:
    """(split, start, count, part name) of every part of the suite."""
    parts = []
    for split, size in split_sizes(suite).items():
        for k, start in enumerate(range(0, size, items_per_part)):
            parts.append((split, start, min(items_per_part, size - start), f"{split}-{k:05d}"))
    return parts


def check_splits(table, strict: bool) -> None:
    """No image in two splits. The suite assigns each scene to one split, so there it is an error;
    a real dataset's release may reuse an image across its splits, which is only reported."""
    owner: dict[bytes, tuple[str, str]] = {}
    shared = 0
    for row_id, split, image in zip(*(table.column(c).to_pylist() for c in ("id", "split", "image"))):
        other = owner.setdefault(hashlib.sha256(image).digest(), (row_id, split))
        if other[1] != split:
            if strict:
                raise RuntimeError(f"examples {other[0]} ({other[1]}) and {row_id} ({split}) share an image")
            shared += 1
    if shared:
        logger.warning("%d examples share their image with an example of another split", shared)


def submit(run: RunDir, config: RunConfig) -> list[ray.ObjectRef]:
    """Start the Ray tasks that make what is missing of the artifact."""
    section = config.examples
    if section.source == "synthetic":
        parts = plan(section.synthetic, section.items_per_part)
        done = set(run.parts(ARTIFACT))
        todo = [p for p in parts if f"{p[3]}.parquet" not in done]
        logger.info("%d parts of %d to make (%d items a part)", len(todo), len(parts), section.items_per_part)
        return [make_part.remote(run, section.synthetic, *p) for p in todo]
    tasks = [(source, split) for source in section.datasets for split in source.splits
             if run.read_json(ARTIFACT, f"_done-{source.name}-{split}.json") is None]
    logger.info("%d dataset splits to read", len(tasks))
    return [read_split.remote(run, source, split, section.items_per_part) for source, split in tasks]


def main(config: RunConfig) -> None:
    section, timings = config.examples, Timings()
    run = RunDir(config.run_dir)
    digest = begin_stage(run, ARTIFACT, STAGE, to_dict(section), config.overwrite)
    if digest is None:
        return
    with timings.step("generate" if section.source == "synthetic" else "read"):
        pending = submit(run, config)
        total, made = len(pending), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            made += ray.get(ready[0])
            logger.info("tasks %d/%d done (%d rows)", total - len(pending), total, made)
    rejected = run.rejected_count(STAGE)
    if not run.parts(ARTIFACT):
        raise RunDirError(f"no usable examples: all {rejected} records were rejected; see "
                          f"{run.path('rejected', STAGE)} for the reasons")
    with timings.step("check splits"):
        table = run.read_table(ARTIFACT, columns=["id", "split", "image"], require_complete=False)
        check_splits(table, strict=section.source == "synthetic")
    tally = table.column("split").value_counts()
    counts = dict(zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist()))
    run.finish(ARTIFACT, stage=STAGE, config=to_dict(section), config_hash=digest,
               counts=StageCounts(in_=table.num_rows + rejected, out=table.num_rows, rejected=rejected),
               seed=section.synthetic.seed,
               timings=timings, extra={"splits": {s: counts.get(s, 0) for s in SPLITS}})
    say("examples: %s -> %s", ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS), run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("examples", "ray"))
