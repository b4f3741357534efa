"""Model fixtures' helpers shared by test folders."""

from __future__ import annotations

import shutil


def perturbed_copy(model_dir, target, scale: float = 0.2, seed: int = 1):
    """A copy of ``model_dir`` whose weights differ (each float tensor times 1 + scale * noise): a
    DPO model stand-in whose implicit reward against the original is not zero."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, target)
    generator = torch.Generator().manual_seed(seed)
    for path in target.glob("*.safetensors"):
        tensors = load_file(path)
        for name, tensor in tensors.items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensors[name] = (tensor * (1 + scale * noise)).contiguous()
        save_file(tensors, path, metadata={"format": "pt"})
    return target


LLAMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] in ['image', 'image_url'] -%}{{- '<image>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
"""The shape of LLaMA3-LLaVA-NeXT's chat template: header tokens around each role, ``<|eot_id|>`` after a turn."""


def hub_checkpoint(model_dir, target, shard_size: str = "200KB"):
    """``model_dir`` (a built LLaVA or LLaVA-NeXT) rewritten as a Hugging Face hub release is laid
    out: the Llama-3 header tokens added to the tokenizer (and the embeddings), a Llama-3-style chat
    template in ``chat_template.json``, safetensors shards with their index, and the CLIP tower's
    weights under ``vision_tower.vision_model.*``."""
    import json

    from transformers import AutoProcessor

    from reasoner.models import load_model
    from reasoner.models.checkpoint import to_vllm_layout

    processor = AutoProcessor.from_pretrained(str(model_dir))
    tokenizer = processor.tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>",
                                                                "<|eot_id|>"]})
    model = load_model(model_dir)
    model.resize_token_embeddings(len(tokenizer))
    target.mkdir(parents=True)
    model.save_pretrained(target, safe_serialization=True, max_shard_size=shard_size)
    processor.chat_template = LLAMA3_TEMPLATE
    tokenizer.chat_template = LLAMA3_TEMPLATE
    processor.save_pretrained(target)
    to_vllm_layout(target)  # the hub's names: vision_tower.vision_model.*
    for name in ("chat_template.jinja",):
        (target / name).unlink(missing_ok=True)
    (target / "chat_template.json").write_text(json.dumps({"chat_template": LLAMA3_TEMPLATE}, indent=2))
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return target
