"""Training data: the SFT mix, bad input refused with a clear error before any worker starts, and
every read streamed (a batch of rows at a time) into a memory-mapped dataset."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from reasoner.config import config_hash
from reasoner.data.images import decode_image, encode_png
from reasoner.rundir import RunDir, RunDirError, StageCounts
from reasoner.schema import SchemaError
from reasoner.training import data, stream
from reasoner.training.config import DPOConfig, SFTConfig
from reasoner.training.data import (
    attach_reference,
    check_batch,
    check_pairs,
    check_reference,
    check_sft_data,
    mix_sft_rows,
    preference_training_dataset,
    read_reference,
    reference_index,
    select_sft,
    sft_training_dataset,
)


def _png(color: str = "red") -> bytes:
    from PIL import Image

    return encode_png(Image.new("RGB", (16, 16), color))


def _artifact(run: RunDir, name: str, rows: list[dict], schema: str | None = None,
              part_rows: int | None = None) -> None:
    part_rows = part_rows or max(1, len(rows))
    for k, start in enumerate(range(0, len(rows), part_rows)):
        run.write_part(name, f"part-{k}", pa.Table.from_pylist(rows[start:start + part_rows]), schema_name=schema)
    run.finish(name, stage="test", config={}, config_hash=config_hash(name), counts=StageCounts(len(rows), len(rows)))


def _sft_rows(n: int) -> list[dict]:
    return [{"id": f"q{i}", "image": _png(), "prompt": f"question {i}", "completion": "4", "mode": mode}
            for i in range(n) for mode in ("cot", "direct")]


def _pairs(n: int) -> list[dict]:
    colors = ("red", "blue", "green", "white")
    return [{"id": f"q{i:03d}", "pair_index": i % 2, "prompt": f"p{i}", "image": _png(colors[i % 4]),
             "chosen": f"a{i}", "rejected": "b", "accuracy": 0.5} for i in range(n)]


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


def test_format_rows_are_the_first_by_seeded_hash_while_holding_few_ids() -> None:
    """The selection keeps a bounded number of ids a group, and picks what a full sort picks."""
    rows = [{"id": f"q{i}", "mode": "direct"} for i in range(1000)] + [{"id": "q5", "mode": "direct"}]
    sources = {f"q{i}": f"s{i % 3}" for i in range(1000)}
    picked = {(r["id"], r["mode"]) for r in mix_sft_rows(rows, sources, "cot", 4, seed=7, captions=False)}

    def key(i: str) -> str:
        return hashlib.sha256(f"7:{i}".encode()).hexdigest()

    expected = set()
    for source in ("s0", "s1", "s2"):
        ids = [r["id"] for r in rows if sources[r["id"]] == source]
        expected.update((i, "direct") for i in sorted(ids, key=key)[:4])
    assert picked == expected


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
        check_sft_data(run, "format", 0, seed=0)


def test_missing_and_schema_violating_data_is_refused(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    with pytest.raises(RunDirError, match="sft_data does not exist"):
        check_sft_data(run, "both", 50, seed=0)
    bad = _sft_rows(40)
    bad[71]["mode"] = "essay"  # in the second part, the second batch of reading
    _artifact(run, "sft_data", bad, part_rows=50)
    with pytest.raises(SchemaError, match=r"row 71 \(id 'q35'\), column 'mode'.*in part-1.parquet"):
        check_sft_data(run, "both", 50, seed=0)


def test_an_unreadable_image_names_the_pair(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    pairs = [{"id": f"q{i}", "pair_index": 0, "prompt": "p", "image": _png(), "chosen": "a", "rejected": "b",
              "accuracy": 0.5} for i in range(3)]
    pairs[1]["image"] = b"\x89PNG\r\n\x1a\n broken"
    _artifact(run, "pairs", pairs, "pairs")
    with pytest.raises(SchemaError, match=r"row 1 \(id 'q1'\), column 'image': the image cannot be read"):
        check_pairs(run)


def test_an_unreadable_image_of_a_selected_sft_row_is_named_by_its_row_in_the_artifact(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    rows = _sft_rows(100)  # 200 rows in 4 parts of 50: several batches of reading
    rows[133]["image"] = b"not an image"  # q66, direct
    _artifact(run, "sft_data", rows, "sft_data", part_rows=50)
    with pytest.raises(SchemaError, match=r"row 133 \(id 'q66'\), column 'image': the image cannot be read"):
        check_sft_data(run, "both", 0, seed=0)
    assert check_sft_data(run, "cot", 0, seed=0).selected == 100  # a direct row's image is not the cot mix's


def test_pairs_are_unique_across_parts_and_chosen_differs_from_rejected(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    pairs = _pairs(6)
    pairs[5].update(id=pairs[1]["id"], pair_index=pairs[1]["pair_index"])
    _artifact(run, "pairs", pairs, "pairs", part_rows=3)
    with pytest.raises(SchemaError, match=r"row 5 \(id 'q001'\), column 'pair_index': .* appears twice"):
        check_pairs(run)
    other = RunDir(str(tmp_path / "other"))
    pairs = _pairs(4)
    pairs[2]["rejected"] = pairs[2]["chosen"]
    _artifact(other, "pairs", pairs, "pairs")
    with pytest.raises(SchemaError, match=r"row 2 \(id 'q002'\), column 'chosen': chosen and rejected are the same"):
        check_pairs(other)


def test_reference_must_cover_every_pair_and_batches_must_fill(tmp_path) -> None:
    pairs = [{"id": "a", "pair_index": 0}, {"id": "a", "pair_index": 1}]
    ref = [{"id": "a", "pair_index": 0, "chosen_ref_logp": -1.0, "rejected_ref_logp": -2.0}]
    with pytest.raises(RunDirError, match=r"no reference log-probs for pair \('a', 1\)"):
        attach_reference(pairs, ref)
    assert attach_reference(pairs[:1], ref)[0]["ref_rejected_logps"] == -2.0
    assert attach_reference(pairs[:1], reference_index(ref))[0]["ref_chosen_logps"] == -1.0
    with pytest.raises(SchemaError, match="3 rows cannot fill one batch on every worker"):
        check_batch(3, 2, 2, "pairs")

    run = RunDir(str(tmp_path))
    _artifact(run, "pairs", _pairs(5), "pairs", part_rows=2)
    covered = [{"id": p["id"], "pair_index": p["pair_index"], "chosen_ref_logp": -1.0, "rejected_ref_logp": -2.0}
               for p in _pairs(5)]
    _artifact(run, "dpo_ref", covered[:3] + covered[4:], "dpo_ref")
    with pytest.raises(RunDirError, match=r"no reference log-probs for pair \('q003', 1\)"):
        check_reference(run, read_reference(run), mdpo=False)
    run.delete("dpo_ref")
    _artifact(run, "dpo_ref", covered, "dpo_ref")
    assert check_reference(run, read_reference(run), mdpo=False) == 5
    with pytest.raises(RunDirError, match="no corrupted-image reference log-probs"):
        check_reference(run, read_reference(run), mdpo=True)


def test_bad_data_fails_before_any_worker_starts(tmp_path) -> None:
    from reasoner.training.dpo import train_dpo
    from reasoner.training.sft import train_sft

    run = RunDir(str(tmp_path))
    rows = _sft_rows(2)
    rows[3]["image"] = b"not an image"
    _artifact(run, "sft_data", rows, "sft_data")
    with pytest.raises(SchemaError, match=r"row 3 \(id 'q1'\), column 'image': the image cannot be read"):
        train_sft(run, SFTConfig(), "~/.cache", "digest")
    with pytest.raises(RunDirError, match="pairs does not exist"):
        train_dpo(run, DPOConfig(), "~/.cache", "digest")
    _artifact(run, "pairs", _pairs(4), "pairs")
    with pytest.raises(RunDirError, match="dpo_ref does not exist"):
        train_dpo(run, DPOConfig(), "~/.cache", "digest")


def test_checks_hold_one_batch_of_images_at_a_time(tmp_path, monkeypatch) -> None:
    """Every read of the checks with images is a batch of at most BATCH_ROWS rows."""
    run = RunDir(str(tmp_path))
    _artifact(run, "sft_data", _sft_rows(100), "sft_data", part_rows=150)
    _artifact(run, "pairs", _pairs(150), "pairs", part_rows=150)
    largest: dict[str, int] = {}
    original = data.iter_artifact

    def spy(run_, artifact, columns=None, **kwargs):
        for batch in original(run_, artifact, columns, **kwargs):
            if "image" in batch.rows.schema.names:
                largest[artifact] = max(largest.get(artifact, 0), batch.rows.num_rows)
            yield batch

    monkeypatch.setattr(data, "iter_artifact", spy)
    assert check_sft_data(run, "both", 0, seed=0).selected == 200
    assert check_pairs(run) == 150
    assert largest == {"sft_data": stream.BATCH_ROWS, "pairs": stream.BATCH_ROWS}


def test_a_worker_trains_on_a_memory_mapped_copy_of_the_selected_rows(tmp_path) -> None:
    run = RunDir(str(tmp_path / "run"))
    rows = _sft_rows(50) + [{"id": "q0", "image": _png("blue"), "prompt": "Describe.", "completion": "Blue.",
                             "mode": "caption"}]
    _artifact(run, "sft_data", rows, "sft_data", part_rows=30)
    selection = select_sft(run, "cot", 0, seed=0, captions=True)
    directory = tmp_path / "scratch"
    directory.mkdir()
    dataset = sft_training_dataset(run, selection, str(directory))
    expected = [r for r in rows if r["mode"] in ("cot", "caption")]
    assert len(dataset) == len(expected) == 51
    assert [f["filename"] for f in dataset.cache_files] == [str(directory / stream.DATA_FILE)]
    first, last = dataset[0], dataset[len(dataset) - 1]
    assert first["prompt"][0]["content"][-1]["text"] == "question 0"
    assert first["completion"][0]["content"][0]["text"] == "4"
    assert last["completion"][0]["content"][0]["text"] == "Blue."
    assert last["image"].getpixel((0, 0)) == decode_image(_png("blue")).getpixel((0, 0))


def test_a_dpo_worker_dataset_carries_reference_log_probs_and_corrupted_images(tmp_path) -> None:
    from reasoner.training.mdpo import corrupt_image

    run = RunDir(str(tmp_path / "run"))
    pairs = _pairs(5)
    _artifact(run, "pairs", pairs, "pairs", part_rows=2)
    _artifact(run, "dpo_ref", [{"id": p["id"], "pair_index": p["pair_index"], "chosen_ref_logp": -float(i),
                                "rejected_ref_logp": -2.0 - i, "chosen_corrupt_ref_logp": -3.0 - i}
                               for i, p in enumerate(pairs)], "dpo_ref")
    directory = tmp_path / "scratch"
    directory.mkdir()
    dataset = preference_training_dataset(run, read_reference(run), str(directory), mdpo_fraction=0.5)
    assert len(dataset) == 5
    row = dataset[3]
    assert (row["ref_chosen_logps"], row["ref_rejected_logps"], row["ref_chosen_corrupt_logps"]) == (-3.0, -5.0, -6.0)
    assert row["chosen"][0]["content"][0]["text"] == "a3"
    corrupt = decode_image(corrupt_image(pairs[3]["image"], 0.5, "q003/1"))
    assert list(row["corrupt_image"].getdata()) == list(corrupt.getdata())


def test_a_killed_workers_scratch_directory_is_removed_by_the_next(tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    root = tmp_path / "datasets"
    stale = root / f"sft--{socket.gethostname()}--{int(gone.stdout)}-abc123"
    elsewhere = root / f"sft--another-host--{int(gone.stdout)}-abc123"  # not this host's to judge
    alive = root / f"dpo--{socket.gethostname()}--{os.getpid()}-def456"
    for d in (stale, elsewhere, alive):
        d.mkdir(parents=True)
    with stream.scratch_directory(str(tmp_path), "sft") as directory:
        assert os.path.isdir(directory) and os.path.dirname(directory) == str(root)
        assert not stale.exists() and elsewhere.exists() and alive.exists()
    assert not os.path.exists(directory)
