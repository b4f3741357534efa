"""The sft and dpo config sections: defaults, validation, the shipped YAML files."""

from __future__ import annotations

import glob
import os

import pytest

from reasoner.config import ConfigError, load_run_config
from reasoner.options import identity
from reasoner.training.config import DPOConfig, SFTConfig
from reasoner.training.deepspeed import zero_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "jobs", "configs", "*.yaml"))))
def test_every_shipped_config_loads_with_dividing_batches(path) -> None:
    config = load_run_config(path)
    for section in (config.sft, config.dpo):
        per_step = section.per_device_batch_size * section.num_workers
        assert section.global_batch_size == per_step * section.gradient_accumulation_steps


def test_h100_config_carries_the_paper_settings() -> None:
    config = load_run_config(os.path.join(REPO, "jobs", "configs", "h100.yaml"))
    sft, dpo = config.sft, config.dpo
    assert (sft.learning_rate, sft.vision_tower_lr, sft.global_batch_size, sft.epochs, sft.zero_stage) == \
        (5e-6, 5e-7, 32, 1.0, 3)
    assert (dpo.learning_rate, dpo.beta, dpo.global_batch_size, dpo.epochs, dpo.zero_stage) == (5e-7, 0.1, 32, 1.0, 2)
    assert sft.use_gpu and dpo.use_gpu and sft.num_workers == 8


@pytest.mark.parametrize(("override", "message"), [
    ("sft.global_batch_size=30", "sft.global_batch_size=30 is invalid: make it a multiple of per_device_batch_size"),
    ("dpo.beta=0", "dpo.beta=0.0 is invalid"),
    ("sft.zero_stage=1", "expected one of 2, 3"),
    ("sft.mix=all", "expected one of 'format', 'direct', 'cot', 'both'"),
    ("dpo.lora.target_modules=[lm_head]", r"dpo.lora.target_modules=\[.lm_head.\] is invalid"),
    ("sft.vision_tower_lr=-1", "sft.vision_tower_lr=-1.0 is invalid"),
])
def test_bad_values_name_the_key_and_the_fix(override, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_run_config(None, [override])


def test_operational_fields_leave_the_identity_alone() -> None:
    assert identity(DPOConfig(max_failures=5, reference_batch_size=2)) == identity(DPOConfig())
    assert identity(SFTConfig(learning_rate=0.1)) != identity(SFTConfig())


def test_zero_configs_leave_the_optimizer_to_the_trainer() -> None:
    two, three = zero_config(2), zero_config(3, bf16=True)
    assert two["zero_optimization"]["stage"] == 2 and not two["bf16"]["enabled"]
    assert three["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] and three["bf16"]["enabled"]
    assert "optimizer" not in two and "scheduler" not in three
    with pytest.raises(ValueError, match="ZeRO stage must be 2 or 3"):
        zero_config(1)


def test_dataclass_defaults_hold_the_paper_recipe() -> None:
    """DESIGN.md: defaults are the paper's values (sections 3-5); the shipped YAMLs override them."""
    config = load_run_config(None)
    sft, dpo = config.sft, config.dpo
    assert (sft.learning_rate, sft.vision_tower_lr, sft.global_batch_size, sft.epochs) == (5e-6, 5e-7, 32, 1.0)
    assert (dpo.learning_rate, dpo.beta, dpo.global_batch_size, dpo.epochs) == (5e-7, 0.1, 32, 1.0)
    assert (config.sample.num_samples, config.sample.temperature, config.sample.mc_temperature) == (32, 1.0, 1.2)
    assert (config.evaluate.pool_size, config.evaluate.ns[-1], config.pairs.min_chosen_samples) == (32, 32, 1)
