"""The precomputed DPO reference equals what TRL's own reference model computes for the same batch."""

from __future__ import annotations


from reasoner.data.images import encode_png


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
