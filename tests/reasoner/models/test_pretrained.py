"""Pretrained checkpoints imported as a run's base model (model.path): a tiny LLaVA-NeXT written
as a hub release is laid out, from a directory and from a bucket URI, and each piece a later
stage needs refused by name when it is missing."""

from __future__ import annotations

import json
import shutil

import pytest

from reasoner.models.pretrained import CheckpointError, check_checkpoint, import_checkpoint
from tests.support.models import hub_checkpoint


@pytest.fixture(scope="module")
def hub_dir(tiny_next_model_dir, tmp_path_factory):
    return hub_checkpoint(tiny_next_model_dir, tmp_path_factory.mktemp("hub") / "llava-next")


def test_a_hub_release_imports_from_a_directory_and_a_bucket(hub_dir, tmp_path) -> None:
    from reasoner.models import load_processor
    from reasoner.models.inputs import format_prompt

    for source in (str(hub_dir), f"file://{hub_dir}"):
        dest = tmp_path / source.replace("/", "_").replace(":", "")
        described = import_checkpoint(source, str(dest))
        assert described["architecture"] == "LlavaNextForConditionalGeneration"
        assert described["image_token"] == "<image>" and described["parameters"] > 100_000
        # The model's own chat template, not the embedded default's.
        text = format_prompt(load_processor(dest), "How many bars?")
        assert text.startswith("<s><|start_header_id|>user<|end_header_id|>\n\n<image>\nHow many bars?<|eot_id|>")


def test_a_flat_vision_tower_is_rewritten_in_vllms_layout(hub_dir, tmp_path) -> None:
    """A checkpoint saved by transformers 5 (``vision_tower.embeddings...``) loads in vLLM after import."""
    from safetensors.torch import load_file, save_file

    flat = tmp_path / "flat"
    shutil.copytree(hub_dir, flat)
    index = json.loads((flat / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        tensors = {k.replace("vision_tower.vision_model.", "vision_tower."): v
                   for k, v in load_file(flat / shard).items()}
        save_file(tensors, flat / shard, metadata={"format": "pt"})
    index["weight_map"] = {k.replace("vision_tower.vision_model.", "vision_tower."): v
                           for k, v in index["weight_map"].items()}
    (flat / "model.safetensors.index.json").write_text(json.dumps(index))
    check_checkpoint(flat)
    names = json.loads((flat / "model.safetensors.index.json").read_text())["weight_map"]
    assert any(k.startswith("vision_tower.vision_model.") for k in names)
    assert not any(k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") for k in names)


def _broken(hub_dir, tmp_path, change) -> str:
    target = tmp_path / "broken"
    shutil.copytree(hub_dir, target)
    change(target)
    return str(target)


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d / "chat_template.json").unlink(), "no chat template"),
    (lambda d: _edit_json(d / "config.json", architectures=["Qwen2VLForConditionalGeneration"]),
     "'Qwen2VLForConditionalGeneration'.* is not supported"),
    (lambda d: [p.rename(d / "pytorch_model.bin") for p in list(d.glob("model-00001-*.safetensors"))]
     and [(d / n).unlink() for n in ["model.safetensors.index.json", *[p.name for p in d.glob("model-*")]]],
     r"pickled \(pytorch_model.bin\)"),
    (lambda d: _edit_json(d / "config.json", image_token_id=999_999, image_token_index=None), "not in the tokenizer"),
    (lambda d: (d / "processor_config.json").unlink(), "no image processor config"),
    (lambda d: next(d.glob("model-00002-*.safetensors")).unlink(), "weight shard model-00002"),
    (lambda d: (d / "config.json").unlink(), "no config.json"),
])
def test_each_missing_piece_is_named(hub_dir, tmp_path, change, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        import_checkpoint(_broken(hub_dir, tmp_path, change), str(tmp_path / "dest"))


def test_a_path_that_is_nothing_is_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such directory, and not a bucket URI or a hub id"):
        import_checkpoint(str(tmp_path / "nowhere" / "x" / "y"), str(tmp_path / "dest"))
