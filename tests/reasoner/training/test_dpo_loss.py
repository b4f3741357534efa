"""The DPO loss TRL computes for reasoner's trainer: the RPO term (``dpo.sft_weight``), alone and
beside the mDPO conditional term, checked at the reference where every DPO term is log 2."""

from __future__ import annotations

import math

import pytest

from reasoner.data.images import encode_png
from reasoner.training.config import DPOConfig
from reasoner.training.dpo import dpo_arguments

PROMPT = "What is the value of the red bar?\nGenerate a reason first and then output a short answer."


def _png(shade: int) -> bytes:
    from PIL import Image

    return encode_png(Image.new("RGB", (32, 32), (shade, 64, 128)))


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
    import trl

    from reasoner.models import ScoreRequest, TransformersScorer, load_model, load_processor
    from reasoner.models.scorer import load_image
    from reasoner.training.data import attach_reference, preference_dataset
    from reasoner.training.dpo import make_dpo_trainer
    from reasoner.training.mdpo import add_corrupt_images
    from reasoner.training.reference import score_pairs

    pairs = [{"id": f"q{i}", "pair_index": 0, "prompt": PROMPT, "image": _png(40 * i),
              "chosen": f"The red bar is {i + 3}.\n### Answer: {i + 3}", "rejected": "### Answer: 9"}
             for i in range(2)]
    if mdpo_weight:
        pairs = add_corrupt_images(pairs, 0.5)
    scorer = TransformersScorer.from_pretrained(tiny_model_dir)
    chosen = scorer.score([ScoreRequest(load_image(p["image"]), p["prompt"], p["chosen"]) for p in pairs])
    nll = -sum(c.total for c in chosen) / sum(len(c.logprobs) for c in chosen)
    rows = attach_reference(pairs, score_pairs(scorer, pairs))
    config = DPOConfig(sft_weight=0.25, mdpo_weight=mdpo_weight)
    args = trl.DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[],
                         remove_unused_columns=False, per_device_train_batch_size=2,
                         gradient_checkpointing=False, **dpo_arguments(config))
    dataset = preference_dataset(rows)
    trainer = make_dpo_trainer(model=load_model(tiny_model_dir).train(), processor=load_processor(tiny_model_dir),
                               args=args, dataset=dataset, peft_config=None, callbacks=[],
                               mdpo_weight=mdpo_weight)
    loss = trainer.compute_loss(trainer.model, trainer.data_collator([dataset[i] for i in range(2)]))
    assert nll > 1.0  # the tiny untrained model: the SFT term is far from negligible
    expected = (1 + mdpo_weight) * math.log(2) + 0.25 * nll
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    assert trainer.loss_types == ["sigmoid", "sft"]  # restored after the conditional pass
