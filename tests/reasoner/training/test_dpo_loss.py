"""The DPO loss TRL computes for reasoner's trainer, checked at the reference where every DPO
term is log 2: the mDPO conditional term (with its deterministic image corruption) and the RPO
term (``dpo.sft_weight``), alone and together."""

from __future__ import annotations

import math

import pytest

from reasoner.data.images import decode_image, encode_png
from reasoner.training.config import DPOConfig
from reasoner.training.dpo import dpo_arguments
from reasoner.training.mdpo import add_corrupt_images, corrupt_image

PROMPT = "What is the value of the red bar?\nGenerate a reason first and then output a short answer."


def _gradient_png() -> bytes:
    from PIL import Image

    image = Image.new("RGB", (32, 32))
    image.putdata([(8 * (i % 32), 8 * (i // 32), 128) for i in range(32 * 32)])
    return encode_png(image)


def _pairs(mdpo: bool) -> list[dict]:
    pairs = [{"id": f"q{i}", "pair_index": 0, "prompt": PROMPT, "image": _gradient_png(),
              "chosen": f"The red bar is {i}.\n### Answer: {i}", "rejected": "### Answer: 9"} for i in range(2)]
    return add_corrupt_images(pairs, 0.5) if mdpo else pairs


def _trainer_at_reference(tiny_model_dir, tmp_path, pairs: list[dict], config: DPOConfig, scorer):
    """reasoner's DPO trainer over ``pairs`` with their reference log-probs from ``scorer``, and
    its collated batch of both pairs."""
    import trl

    from reasoner.models import load_model, load_processor
    from reasoner.training.data import attach_reference, preference_dataset
    from reasoner.training.dpo import make_dpo_trainer
    from reasoner.training.reference import score_pairs

    rows = attach_reference(pairs, score_pairs(scorer, pairs))
    args = trl.DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[],
                         remove_unused_columns=False, per_device_train_batch_size=2,
                         gradient_checkpointing=False, **dpo_arguments(config))
    dataset = preference_dataset(rows)
    trainer = make_dpo_trainer(model=load_model(tiny_model_dir).train(), processor=load_processor(tiny_model_dir),
                               args=args, dataset=dataset, peft_config=None, callbacks=[],
                               mdpo_weight=config.mdpo_weight)
    return trainer, trainer.data_collator([dataset[i] for i in range(2)])


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
    from reasoner.models import TransformersScorer

    scorer = TransformersScorer.from_pretrained(tiny_model_dir)
    trainer, batch = _trainer_at_reference(tiny_model_dir, tmp_path, _pairs(mdpo=True),
                                           DPOConfig(beta=0.1, mdpo_weight=0.5), scorer)
    assert trainer.ref_model is None
    assert "conditional" in batch
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(1.5 * math.log(2), abs=1e-4)
    assert trainer._metrics["train"]["mdpo/loss"][0] == pytest.approx(math.log(2), abs=1e-4)


def test_sft_weight_adds_trls_sft_loss_and_refuses_negative_weights() -> None:
    assert dpo_arguments(DPOConfig())["loss_type"] == ["sigmoid"]
    args = dpo_arguments(DPOConfig(sft_weight=0.2))
    assert (args["loss_type"], args["loss_weights"]) == (["sigmoid", "sft"], [1.0, 0.2])
    with pytest.raises(ValueError, match=r"sft_weight=-1 is invalid: use 0 \(off\) or a positive weight"):
        DPOConfig(sft_weight=-1)


@pytest.mark.parametrize("mdpo_weight", [0.0, 0.5])
def test_loss_at_the_reference_is_log_two_plus_the_weighted_chosen_nll(
        tiny_model_dir, tmp_path, mdpo_weight) -> None:
    """At the start the policy is the reference: DPO gives log 2, the SFT term the chosen tokens'
    mean NLL under the reference (the scorer's), and the mDPO term log 2 without its own SFT term."""
    from reasoner.models import ScoreRequest, TransformersScorer
    from reasoner.models.inputs import load_image

    pairs = _pairs(mdpo=bool(mdpo_weight))
    scorer = TransformersScorer.from_pretrained(tiny_model_dir)
    chosen = scorer.score([ScoreRequest(load_image(p["image"]), p["prompt"], p["chosen"]) for p in pairs])
    nll = -sum(c.total for c in chosen) / sum(len(c.logprobs) for c in chosen)
    trainer, batch = _trainer_at_reference(tiny_model_dir, tmp_path, pairs,
                                           DPOConfig(sft_weight=0.25, mdpo_weight=mdpo_weight), scorer)
    loss = trainer.compute_loss(trainer.model, batch)
    assert nll > 1.0  # the tiny untrained model: the SFT term is far from negligible
    expected = (1 + mdpo_weight) * math.log(2) + 0.25 * nll
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    assert trainer.loss_types == ["sigmoid", "sft"]  # restored after the conditional pass
