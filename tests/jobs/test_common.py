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


def _job(*args: str):
    import subprocess
    import sys

    from tests.jobs.conftest import REPO

    return subprocess.run([sys.executable, "-m", "jobs.make_examples", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_a_users_mistakes_get_one_line_before_anything_starts(tmp_path) -> None:
    """Issue 17's probes: each mistake is one line naming the path or key and the fix, exit 2, no
    traceback, and nothing started (the checks run before Ray)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x00\xd0\xff\xfe" * 64)
    cases = [
        ([f"run_dir={a_file}"], "is a file, not a directory"),
        ([f"run_dir={a_file}/run"], f"lies under {a_file}, which is a file"),
        (["--config", str(tmp_path)], "is a directory; give a YAML file"),
        (["--config", str(binary)], "is not a text file"),
        ([f"run_dir={tmp_path / 'r'}", "sft.global_batch_size=-64"], "sft.global_batch_size=-64 is invalid"),
        ([f"run_dir={tmp_path / 'r'}", "sft.weight_decay=-1"], "sft.weight_decay=-1.0 is invalid"),
        ([f"run_dir={tmp_path / 'r'}", "evaluate.max_tokens=0"], "evaluate.max_tokens=0 is invalid"),
    ]
    for args, message in cases:
        done = _job(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
