"""Training data: the SFT mix, and bad input refused with a clear error before any worker starts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from reasoner.config import config_hash
from reasoner.data.images import encode_png
from reasoner.rundir import RunDir, RunDirError, StageCounts
from reasoner.schema import SchemaError
from reasoner.training.config import DPOConfig, SFTConfig
from reasoner.training.data import attach_reference, check_batch, load_pairs, load_sft_rows, mix_sft_rows


def _png(color: str = "red") -> bytes:
    from PIL import Image

    return encode_png(Image.new("RGB", (16, 16), color))


def _artifact(run: RunDir, name: str, rows: list[dict], schema: str | None = None) -> None:
    run.write_part(name, "part-0", pa.Table.from_pylist(rows), schema_name=schema)
    run.finish(name, stage="test", config={}, config_hash=config_hash(name), counts=StageCounts(len(rows), len(rows)))


def _sft_rows(n: int) -> list[dict]:
    return [{"id": f"q{i}", "image": _png(), "prompt": f"question {i}", "completion": "4", "mode": mode}
            for i in range(n) for mode in ("cot", "direct")]


def test_mix_takes_every_row_of_its_modes_and_format_rows_of_the_others() -> None:
    rows = _sft_rows(6)
    sources = {f"q{i}": "synthetic/chart" if i < 3 else "synthetic/counting" for i in range(6)}
    both = mix_sft_rows(rows, sources, "both", 1, seed=0)
    assert len(both) == 12
    cot = mix_sft_rows(rows, sources, "cot", 1, seed=0)
    assert sum(r["mode"] == "cot" for r in cot) == 6
    assert sum(r["mode"] == "direct" for r in cot) == 2  # one format row per source
    fmt = mix_sft_rows(rows, sources, "format", 2, seed=0)
    assert sorted((r["mode"], sources[r["id"]]) for r in fmt).count(("cot", "synthetic/chart")) == 2
    assert len(fmt) == 8
    assert mix_sft_rows(rows, sources, "direct", 0, seed=0) == [r for r in rows if r["mode"] == "direct"]


def test_caption_rows_join_any_mix_or_none() -> None:
    rows = _sft_rows(6) + [{"id": f"q{i}", "image": _png(), "prompt": "Describe the image.",
                            "completion": f"Field A is {i}.", "mode": "caption"} for i in range(6)]
    sources = {f"q{i}": "synthetic/document" for i in range(6)}
    for mix in ("format", "direct", "cot", "both"):
        mixed = mix_sft_rows(rows, sources, mix, 1, seed=0, captions=True)
        assert sum(r["mode"] == "caption" for r in mixed) == 6, mix
        without = mix_sft_rows(rows, sources, mix, 1, seed=0, captions=False)
        assert not any(r["mode"] == "caption" for r in without), mix  # no format rows of captions either
        assert without == [r for r in mixed if r["mode"] != "caption"]
    assert len(mix_sft_rows(rows, sources, "format", 2, seed=0, captions=False)) == 4  # 2 a mode, not 2 an id


def test_a_mix_that_selects_nothing_is_refused(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    _artifact(run, "sft_data", _sft_rows(2), "sft_data")
    with pytest.raises(SchemaError, match="selects no rows"):
        load_sft_rows(run, "format", 0, seed=0)


def test_missing_and_schema_violating_data_is_refused(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    with pytest.raises(RunDirError, match="sft_data does not exist"):
        load_sft_rows(run, "both", 50, seed=0)
    bad = _sft_rows(1)
    bad[0]["mode"] = "essay"
    _artifact(run, "sft_data", bad)
    with pytest.raises(SchemaError, match="mode"):
        load_sft_rows(run, "both", 50, seed=0)


def test_an_unreadable_image_names_the_pair(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    pairs = [{"id": f"q{i}", "pair_index": 0, "prompt": "p", "image": _png(), "chosen": "a", "rejected": "b",
              "accuracy": 0.5} for i in range(3)]
    pairs[1]["image"] = b"\x89PNG\r\n\x1a\n broken"
    _artifact(run, "pairs", pairs, "pairs")
    with pytest.raises(SchemaError, match=r"row 1 \(id 'q1'\), column 'image': the image cannot be read"):
        load_pairs(run)


def test_reference_must_cover_every_pair_and_batches_must_fill() -> None:
    pairs = [{"id": "a", "pair_index": 0}, {"id": "a", "pair_index": 1}]
    ref = [{"id": "a", "pair_index": 0, "chosen_ref_logp": -1.0, "rejected_ref_logp": -2.0}]
    with pytest.raises(RunDirError, match=r"no reference log-probs for pair \('a', 1\)"):
        attach_reference(pairs, ref)
    assert attach_reference(pairs[:1], ref)[0]["ref_rejected_logps"] == -2.0
    with pytest.raises(SchemaError, match="3 rows cannot fill one batch on every worker"):
        check_batch(3, 2, 2, "pairs")


def test_bad_data_fails_before_any_worker_starts(tmp_path) -> None:
    from reasoner.training.dpo import train_dpo
    from reasoner.training.sft import train_sft

    run = RunDir(str(tmp_path))
    rows = _sft_rows(2)
    rows[3]["image"] = b"not an image"
    _artifact(run, "sft_data", rows, "sft_data")
    with pytest.raises(SchemaError, match="the image cannot be read"):
        train_sft(run, SFTConfig(), "~/.cache", "digest")
    with pytest.raises(RunDirError, match="pairs does not exist"):
        train_dpo(run, DPOConfig(), "~/.cache", "digest")
