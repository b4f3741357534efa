"""The precomputed DPO reference equals what TRL's own reference model computes for the same batch;
the reference pass reads the pairs a batch at a time and resumes from the parts it wrote."""

from __future__ import annotations

from reasoner.data.images import decode_image, encode_png


def _pairs():
    from PIL import Image

    images = [encode_png(Image.new("RGB", (32, 32), color)) for color in ("red", "blue", "green")]
    prompt = "What is the value of the red bar?\nGenerate a reason first and then output a short answer."
    return [
        {"id": "a", "pair_index": 0, "prompt": prompt, "image": images[0],
         "chosen": "The red bar is 4.\n### Answer: 4", "rejected": "The red bar is 7.\n### Answer: 7"},
        {"id": "b", "pair_index": 0, "prompt": "How many shapes are there in total?\nAnswer the question with "
         "a short answer.", "image": images[1], "chosen": "5", "rejected": "There are 3.\n### Answer: 3"},
        {"id": "b", "pair_index": 1, "prompt": prompt, "image": images[2],
         "chosen": "The red bar is 12.\nThe blue bar is 5.\n12 - 5 = 7.\n### Answer: 7", "rejected": "4"},
    ]


def test_precomputed_reference_equals_trl_reference_forward(tiny_model_dir, tmp_path) -> None:
    import torch
    import trl

    from reasoner.models import TransformersScorer, load_model, load_processor
    from reasoner.training.data import preference_dataset
    from reasoner.training.reference import score_pairs

    pairs = _pairs()
    rows = score_pairs(TransformersScorer.from_pretrained(tiny_model_dir, batch_size=2), pairs)

    processor = load_processor(tiny_model_dir)
    args = trl.DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], remove_unused_columns=False,
                         per_device_train_batch_size=3, gradient_checkpointing=False, bf16=False)
    trainer = trl.DPOTrainer(model=load_model(tiny_model_dir).train(), args=args,
                             train_dataset=preference_dataset(pairs), processing_class=processor)
    assert trainer.ref_model is not None  # TRL's resident reference: the SFT model, loaded again
    dataset = preference_dataset(pairs)
    batch = trainer.data_collator([dataset[i] for i in range(len(pairs))])
    chosen, rejected = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    expected_chosen = torch.tensor([r["chosen_ref_logp"] for r in rows])
    expected_rejected = torch.tensor([r["rejected_ref_logp"] for r in rows])
    torch.testing.assert_close(chosen.float(), expected_chosen, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rejected.float(), expected_rejected, atol=1e-5, rtol=1e-5)
    assert all(r["chosen_ref_logp"] < 0 for r in rows)


def _gradient_png() -> bytes:
    from PIL import Image

    image = Image.new("RGB", (32, 32))
    image.putdata([(8 * (i % 32), 8 * (i // 32), 128) for i in range(32 * 32)])
    return encode_png(image)


class _LengthScorer:
    """A stand-in scorer: a response's total is minus its length, and 100 less under any image
    but the pairs' one; records how many requests each call held."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.image = decode_image(_gradient_png()).tobytes()

    def score(self, requests):
        from types import SimpleNamespace

        self.calls.append(len(requests))
        return [SimpleNamespace(total=-float(len(r.response)) - (decode_image(r.image).tobytes() != self.image) * 100.0)
                for r in requests]


def _pairs_run(tmp_path, n: int, part_rows: int):
    import pyarrow as pa

    from reasoner.config import config_hash
    from reasoner.rundir import RunDir, StageCounts

    run = RunDir(str(tmp_path))
    pairs = [{"id": f"q{i:03d}", "pair_index": 0, "prompt": "p", "image": _gradient_png(), "chosen": "x" * (i + 1),
              "rejected": "y", "accuracy": 0.5} for i in range(n)]
    for k, start in enumerate(range(0, n, part_rows)):
        run.write_part("pairs", f"part-{k}", pa.Table.from_pylist(pairs[start:start + part_rows]), schema_name="pairs")
    run.finish("pairs", stage="test", config={}, config_hash=config_hash(n), counts=StageCounts(n, n))
    return run, pairs


def test_reference_pass_streams_the_pairs_and_resumes_from_its_parts(tmp_path) -> None:
    from reasoner.training.reference import ARTIFACT, reference_pass

    run, pairs = _pairs_run(tmp_path, 23, part_rows=10)
    scorer = _LengthScorer()
    assert reference_pass(run, scorer, part_size=8, batch_rows=4) == 23
    assert max(scorer.calls) == 2 * 4  # one read batch a call: chosen and rejected of 4 pairs
    assert len(run.parts(ARTIFACT)) == 3  # 8 + 8 + 7
    rows = {(r["id"], r["pair_index"]): r for r in run.read_table(ARTIFACT, require_complete=False).to_pylist()}
    assert len(rows) == 23 and all(rows[p["id"], 0]["chosen_ref_logp"] == -len(p["chosen"]) for p in pairs)
    # A lost part is scored again, and only it.
    lost = run.parts(ARTIFACT)[1]
    lost_keys = {(r["id"], r["pair_index"]) for r in run.read_table(ARTIFACT, require_complete=False).to_pylist()}
    run.fs.delete_file(run.path(ARTIFACT, lost))
    lost_keys -= {(r["id"], r["pair_index"]) for r in run.read_table(ARTIFACT, require_complete=False).to_pylist()}
    scorer = _LengthScorer()
    assert reference_pass(run, scorer, part_size=8, batch_rows=4) == len(lost_keys) in (7, 8)
    again = run.read_table(ARTIFACT, require_complete=False).to_pylist()
    assert sorted((r["id"], r["pair_index"]) for r in again) == sorted(rows)
    assert reference_pass(run, _LengthScorer(), part_size=8) == 0


def test_reference_pass_scores_the_corrupted_images_for_mdpo(tmp_path) -> None:
    from reasoner.training.reference import ARTIFACT, reference_pass

    run, pairs = _pairs_run(tmp_path, 5, part_rows=5)
    reference_pass(run, _LengthScorer(), mdpo_fraction=0.5, batch_rows=2)
    for row in run.read_table(ARTIFACT, require_complete=False).to_pylist():
        assert row["chosen_corrupt_ref_logp"] == row["chosen_ref_logp"] - 100.0
