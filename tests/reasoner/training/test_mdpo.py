"""The mDPO conditional term: deterministic corruption, and the loss through TRL at the reference."""

from __future__ import annotations

import math

import pytest

from reasoner.data.images import decode_image, encode_png
from reasoner.training.mdpo import add_corrupt_images, corrupt_image


def _gradient_png() -> bytes:
    from PIL import Image

    image = Image.new("RGB", (32, 32))
    image.putdata([(8 * (i % 32), 8 * (i // 32), 128) for i in range(32 * 32)])
    return encode_png(image)


def test_corruption_blanks_about_the_fraction_and_is_deterministic() -> None:
    png = _gradient_png()
    out = corrupt_image(png, 0.5, "q1/0")
    assert out == corrupt_image(png, 0.5, "q1/0")
    assert out != corrupt_image(png, 0.5, "q2/0")
    before, after = list(decode_image(png).getdata()), list(decode_image(out).getdata())
    changed = sum(a != b for a, b in zip(before, after)) / len(before)
    assert 0.3 < changed <= 0.6
    with pytest.raises(ValueError, match="fraction"):
        corrupt_image(png, 1.0, "q")


def test_conditional_term_is_log_two_at_the_reference(tiny_model_dir, tmp_path) -> None:
    """At the start the policy is the reference: both DPO terms are log 2, the loss (1 + w) log 2.
    That holds only if the reference pass scored the corrupted images as the trainer sees them."""
    import trl

    from reasoner.models import TransformersScorer, load_model, load_processor
    from reasoner.training.data import attach_reference, preference_dataset
    from reasoner.training.dpo import make_dpo_trainer
    from reasoner.training.reference import score_pairs

    prompt = "What is the value of the red bar?\nGenerate a reason first and then output a short answer."
    pairs = add_corrupt_images([
        {"id": f"q{i}", "pair_index": 0, "prompt": prompt, "image": _gradient_png(),
         "chosen": f"The red bar is {i}.\n### Answer: {i}", "rejected": "### Answer: 9"} for i in range(2)], 0.5)
    reference = score_pairs(TransformersScorer.from_pretrained(tiny_model_dir), pairs)
    rows = attach_reference(pairs, reference)
    args = trl.DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], beta=0.1,
                         remove_unused_columns=False, per_device_train_batch_size=2, gradient_checkpointing=False)
    dataset = preference_dataset(rows)
    trainer = make_dpo_trainer(model=load_model(tiny_model_dir).train(), processor=load_processor(tiny_model_dir),
                               args=args, dataset=dataset, peft_config=None, callbacks=[], mdpo_weight=0.5)
    assert trainer.ref_model is None
    batch = trainer.data_collator([dataset[i] for i in range(2)])
    assert "conditional" in batch
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(1.5 * math.log(2), abs=1e-4)
    assert trainer._metrics["train"]["mdpo/loss"][0] == pytest.approx(math.log(2), abs=1e-4)
