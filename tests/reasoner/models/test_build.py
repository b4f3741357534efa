"""Tests of reasoner.models presets, build and checkpoint: the embedded default's base models."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from reasoner.models import (
    PRESETS,
    build_base_model,
    check_model_dir,
    count_parameters,
    get_preset,
    load_model,
    load_processor,
    model_config,
    save_model,
    to_vllm_layout,
)
from reasoner.models.build import random_model
from reasoner.models.tokenizer import build_tokenizer
from reasoner.prompts import build_prompt, chat_messages


@pytest.fixture(scope="module")
def tokenizer(model_texts):
    return build_tokenizer(model_texts)


def weight_names(model_dir) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return list(f.keys())


@pytest.mark.parametrize(("preset", "low", "high"), [("tiny", 0.2e6, 2e6), ("tiny-next", 0.2e6, 2e6), ("small", 5.5e6, 7e6)])
def test_parameter_counts(tokenizer, preset, low, high):
    model = random_model(model_config(preset, tokenizer))
    assert low < count_parameters(model) < high


def test_small_preset_shape(tokenizer):
    config = model_config("small", tokenizer)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (256, 4)
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (192, 4)
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (48, 8)
    assert config.vision_feature_layer == -1
    assert config.image_seq_length == 36


def test_unknown_preset(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"unknown model preset 'huge'.*small.*tiny"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown model preset"):
        build_base_model(tmp_path, "huge", texts=["a b"])


@pytest.mark.parametrize("image_size", [33, 20, 0, -8, 32.0, "32"])
def test_bad_image_size(tokenizer, tmp_path, image_size):
    with pytest.raises(ValueError, match="image_size"):
        build_base_model(tmp_path / "model", "tiny", texts=["a b"], image_size=image_size)
    assert not (tmp_path / "model").exists()


def test_bad_image_size_names_the_fix(tokenizer):
    with pytest.raises(ValueError, match=r"image_size=33 is not a multiple .* patch size 8: use 32 or 40"):
        model_config("tiny", tokenizer, image_size=33)


def test_built_directory(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "processor_config.json", "generation_config.json"} <= names  # fmt: skip
    assert check_model_dir(tiny_model_dir) == tiny_model_dir
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["vision_config"]["image_size"] == 32


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_next_model_dir"])
def test_weights_in_vllm_layout(request, fixture):
    names = weight_names(request.getfixturevalue(fixture))
    tower = [n for n in names if "vision_tower" in n]
    assert tower and all(n.startswith("vision_tower.vision_model.") for n in tower)
    assert "language_model.lm_head.weight" in names


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_next_model_dir"])
def test_transformers_loads_with_no_missing_or_unexpected_keys(request, fixture):
    from transformers import AutoModelForImageTextToText

    model_dir = request.getfixturevalue(fixture)
    _, info = AutoModelForImageTextToText.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_same_seed_same_weights(tiny_model_dir, model_texts, tmp_path):
    import torch
    from safetensors.torch import load_file

    again = build_base_model(tmp_path / "again", "tiny", texts=model_texts, seed=0)
    other = build_base_model(tmp_path / "other", "tiny", texts=model_texts, seed=1)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(base[k], v) for k, v in load_file(again / "model.safetensors").items())
    assert not torch.equal(base["multi_modal_projector.linear_1.weight"],
                           load_file(other / "model.safetensors")["multi_modal_projector.linear_1.weight"])  # fmt: skip


def test_image_size_parameter(model_texts, tmp_path):
    model_dir = build_base_model(tmp_path / "m", "tiny", texts=model_texts, image_size=40)
    processor = load_processor(model_dir)
    inputs = processor(images=Image.new("RGB", (40, 40)), text="<image>x", return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (40, 40)
    assert inputs["input_ids"][0].tolist().count(processor.image_token_id) == 25  # (40 / 8) ** 2


@pytest.mark.parametrize(("fixture", "image_tokens"), [("tiny_model_dir", 16), ("tiny_next_model_dir", 36)])
def test_generate_with_an_image(request, fixture, image_tokens):
    import torch

    model_dir = request.getfixturevalue(fixture)
    model, processor = load_model(model_dir), load_processor(model_dir)
    prompt = build_prompt("What is the value of the red bar?", None, "cot")
    text = processor.apply_chat_template(chat_messages(prompt), add_generation_prompt=True, tokenize=False)
    inputs = processor(images=Image.new("RGB", (32, 32), (200, 30, 30)), text=text, return_tensors="pt")
    assert inputs["input_ids"][0].tolist().count(processor.image_token_id) == image_tokens
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=6, do_sample=True)
    assert out.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
                                     "chat_template.jinja"])  # fmt: skip
def test_incomplete_directory(tiny_model_dir, tmp_path, missing):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    (copy / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"not a complete model directory.*{missing}"):
        check_model_dir(copy)
    with pytest.raises(FileNotFoundError, match=missing):
        load_model(copy)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_dir(tmp_path / "nowhere")


def test_to_vllm_layout_rewrites_a_plain_save(tiny_model_dir, tokenizer, tmp_path):
    """A model built from its config saves its tower flat; to_vllm_layout fixes that in place."""
    model = random_model(model_config("tiny", tokenizer))
    plain = tmp_path / "plain"
    model.save_pretrained(plain)  # transformers 5.19: vision_tower.embeddings...
    assert any(n.startswith("vision_tower.embeddings.") for n in weight_names(plain))
    assert to_vllm_layout(plain) is True
    assert to_vllm_layout(plain) is False  # idempotent
    assert sorted(weight_names(plain)) == sorted(weight_names(tiny_model_dir))


def test_resaved_model_keeps_the_vllm_layout(tiny_model_dir, tmp_path):
    """A model loaded from a model directory and saved again (as a trainer does) keeps the layout."""
    model, processor = load_model(tiny_model_dir), load_processor(tiny_model_dir)
    model.save_pretrained(tmp_path / "resaved")  # transformers reverts the renaming it loaded with
    assert sorted(weight_names(tmp_path / "resaved")) == sorted(weight_names(tiny_model_dir))
    saved = save_model(model, tmp_path / "saved", processor=processor)
    assert sorted(weight_names(saved)) == sorted(weight_names(tiny_model_dir))
    check_model_dir(saved)
    load_model(saved)


def test_presets_are_listed():
    assert set(PRESETS) == {"tiny", "small", "tiny-next"}
    for preset in PRESETS.values():
        assert preset.image_size % preset.patch_size == 0
