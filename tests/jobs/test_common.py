"""jobs._common: the Ray dataset a stage maps its workers over."""

from __future__ import annotations

from jobs._common import read_artifact_rows, select_ids
from reasoner.rundir import RunDir


def _block_sizes(ds) -> list[int]:
    # batch_size=None: each map task gets one whole block, as a stage's worker gets its batch.
    return ds.map_batches(lambda b: {"rows": [len(b["id"])]}, batch_size=None).take_all()


def test_rows_per_block_gives_a_map_task_per_part(fresh_run) -> None:
    run = RunDir(str(fresh_run))
    ids = select_ids(run, "train")
    assert len(ids) >= 20 and len(run.parts("examples")) < len(ids) / 4
    whole = [r["rows"] for r in _block_sizes(read_artifact_rows(run, "examples", ids))]
    assert max(whole) > 4  # what Ray Data reads: a block per file or more, not per part
    cut = [r["rows"] for r in _block_sizes(read_artifact_rows(run, "examples", ids, rows_per_block=4))]
    assert sum(cut) == len(ids) and max(cut) <= 4 and len(cut) >= len(ids) / 4
    rows = read_artifact_rows(run, "examples", ids[:5], rows_per_block=4).take_all()
    assert sorted(r["id"] for r in rows) == ids[:5]
