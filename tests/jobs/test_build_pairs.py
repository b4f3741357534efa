"""jobs.build_pairs on candidates with known correctness: bands, pairs, truncation, stats, resume."""

from __future__ import annotations

import pytest

from jobs import build_pairs
from reasoner.rundir import RunDir, StageCounts
from tests.jobs.conftest import install_model, run_config

pytestmark = pytest.mark.integration


def _candidates(example: dict, n_correct: int, n: int = 8) -> list[dict]:
    rows = []
    for k in range(n):
        right = k < n_correct
        text = example["rationale"] if right else f"{k + 100} is my guess.\n### Answer: 999{k}"
        if right and k:
            text = f"Step {k}.\n" + text  # distinct correct texts
        rows.append({"id": example["id"], "sample_index": k, "prompt": example["question"], "text": text,
                     "answer": "x", "score": float(right), "correct": right, "num_tokens": 10,
                     "cumulative_logprob": -1.0})
    return rows


def test_pairs_from_candidates(fresh_run, tiny_model_dir) -> None:
    run = RunDir(str(fresh_run))
    install_model(run, tiny_model_dir, "models/base")
    train = sorted((e for e in run.read_table("examples").to_pylist() if e["split"] == "train"),
                   key=lambda e: e["id"])[:4]
    # Accuracies 1/8 (too hard), 2/8 (kept: the bound is inclusive), 4/8 (kept), 8/8 (too easy).
    correct = dict(zip((e["id"] for e in train), (1, 2, 4, 8)))
    for batch in (train[:2], train[2:]):
        rows = [row for e in batch for row in _candidates(e, correct[e["id"]])]
        run.write_batch("candidates", "sample", [e["id"] for e in batch], rows, schema_name="candidates")
    run.finish("candidates", stage="sample", config={"sample": {"model": "models/base"}}, config_hash="c1",
               counts=StageCounts(4, 4))

    # The paper's rule: any correct text may be chosen (the default config asks for two samples).
    config = run_config(fresh_run, "pairs.max_response_tokens=12", "pairs.min_chosen_samples=1")
    build_pairs.main(config)
    pairs = run.read_table("pairs", schema_name="pairs").to_pylist()
    kept = {p["id"] for p in pairs}
    assert kept == {train[1]["id"], train[2]["id"]}
    by_id = {e["id"]: e for e in train}
    for p in pairs:
        assert p["image"] == by_id[p["id"]]["image"]
        assert p["accuracy"] == correct[p["id"]] / 8
        assert p["chosen"] != p["rejected"] and not p["rejected"].startswith(by_id[p["id"]]["rationale"][:5])
    # 2 correct x 6 wrong and 4 x 4: 3 pairs each, the most the config allows.
    assert sorted(p["pair_index"] for p in pairs if p["id"] == train[1]["id"]) == [0, 1, 2]
    stats = run.read_json("pairs", "_stats.json")
    assert stats["questions"] == 4 and stats["kept"] == 2 and stats["pairs"] == 6
    assert stats["dropped"]["too_hard"] == 1 and stats["dropped"]["too_easy"] == 1
    assert stats["histogram"][1] == 1 and stats["histogram"][2] == 1 and stats["histogram"][5] == 1
    assert stats["histogram"][9] == 1
    # Responses were cut to 12 tokens of the model's tokenizer.
    from reasoner.models import load_processor

    tokenizer = load_processor(run.path("models/base")).tokenizer
    assert all(len(tokenizer.encode(p["chosen"], add_special_tokens=False)) <= 12 for p in pairs)
    manifest = run.manifest("pairs")
    assert manifest["counts"] == {"in": 4, "out": 2, "rejected": 0} and manifest["pairs"] == 6

    # A lost part is made again, identical (pairs are seeded per question).
    part = run.parts("pairs")[0]
    before = run.read_table("pairs").to_pylist()
    run.fs.delete_file(run.path("pairs", part))
    run.fs.delete_file(run.path("pairs", f"_stats-{part.removesuffix('.parquet')}.json"))
    run.fs.delete_file(run.path("pairs", "_manifest.json"))
    build_pairs.main(config)
    key = lambda p: (p["id"], p["pair_index"])  # noqa: E731
    assert sorted(run.read_table("pairs").to_pylist(), key=key) == sorted(before, key=key)


def test_only_the_images_of_paired_questions_are_read(tmp_path) -> None:
    """example_images reads the id column of every part, and images only where a wanted id is:
    a part without an image column is never asked for one unless it holds a wanted id."""
    import pyarrow as pa

    from jobs.build_pairs import example_images
    from reasoner.rundir import RunDirError

    run = RunDir(str(tmp_path))
    images = {f"e{i}": bytes([i]) * 10 for i in range(12)}
    run.write_part("examples", "part-0", pa.table({"id": ["e0", "e1", "e2"],
                                                   "image": [images[f"e{i}"] for i in range(3)]}))
    run.write_part("examples", "part-1", pa.table({"id": [f"e{i}" for i in range(3, 9)]}))  # ids only: never read
    run.write_part("examples", "part-2", pa.table({"id": [f"e{i}" for i in range(9, 12)],
                                                   "image": [images[f"e{i}"] for i in range(9, 12)]}))
    assert example_images(run, {"e1", "e10"}, batch_rows=2) == {"e1": images["e1"], "e10": images["e10"]}
    assert example_images(run, set()) == {}
    with pytest.raises(RunDirError, match="no example 'e99'"):
        example_images(run, {"e0", "e99"})
    with pytest.raises(Exception, match="image"):
        example_images(run, {"e4"})  # the part that holds it has no images: it was read
