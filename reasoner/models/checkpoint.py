"""Model directories: save in the layout every engine reads, load, and check for completeness.

transformers 5.19 saves a LLaVA's CLIP tower as ``vision_tower.embeddings...`` (its
``CLIPVisionModel`` has no ``vision_model`` level any more), but vLLM 0.32 reads
``vision_tower.vision_model.embeddings...``, the layout of the Hugging Face hub's LLaVA
checkpoints, which transformers also loads (its ``CLIPVisionModel`` conversion strips the prefix).
``save_model`` writes that layout; ``to_vllm_layout`` rewrites a directory saved by anything else
(e.g. a trainer's ``save_model``) in place, so SFT and DPO checkpoints load in vLLM too.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# CLIP and SigLIP towers: vLLM nests their weights under ``vision_model``.
_FLAT_TOWER = re.compile(r"^((?:model\.)?vision_tower\.)(?!vision_model\.)")
_NESTED_TOWER_TYPES = ("clip_vision_model", "siglip_vision_model")


def vllm_key(key: str) -> str:
    """A weight name in vLLM's layout: ``vision_tower.X`` -> ``vision_tower.vision_model.X``."""
    return _FLAT_TOWER.sub(r"\1vision_model.", key)


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / WEIGHTS_INDEX_FILE
    if index.is_file():
        return sorted({model_dir / name for name in json.loads(index.read_text())["weight_map"].values()})
    return [model_dir / WEIGHTS_FILE]


def to_vllm_layout(model_dir: str | Path) -> bool:
    """Rewrite the safetensors weights of ``model_dir`` in vLLM's layout, in place (idempotent).

    Only a CLIP or SigLIP vision tower is renamed (see the module docstring). Returns True if any
    weight was renamed.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("vision_config", {}).get("model_type") not in _NESTED_TOWER_TYPES:
        return False
    renamed = False
    for path in _weight_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
            if all(vllm_key(k) == k for k in keys):
                continue
            tensors = {vllm_key(k): f.get_tensor(k) for k in keys}
        save_file(tensors, str(path), metadata={"format": "pt", **metadata})
        renamed = True
    index = model_dir / WEIGHTS_INDEX_FILE
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {vllm_key(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2) + "\n")
    if renamed:
        logger.info("rewrote the vision tower weights of %s in vLLM's layout", model_dir)
    return renamed


def save_model(model: PreTrainedModel, output_dir: str | Path, processor: ProcessorMixin | None = None) -> Path:
    """Save ``model`` (and ``processor``: tokenizer, chat template, image processor) to ``output_dir``.

    Weights are safetensors in the layout both vLLM and transformers load (``to_vllm_layout``).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(output_dir)
    to_vllm_layout(output_dir)
    return output_dir


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        path = model_dir / name
        if path.is_file() and json.loads(path.read_text()).get("chat_template"):
            return True
    return False


# (description, any of these files); each entry must be present.
_REQUIRED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the model config", ("config.json",)),
    ("the weights", (WEIGHTS_FILE, WEIGHTS_INDEX_FILE)),
    ("the tokenizer", ("tokenizer.json", "tokenizer.model")),
    ("the tokenizer config", ("tokenizer_config.json",)),
    ("the image processor config", ("preprocessor_config.json", "processor_config.json")),
)


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path if it holds a complete model, else a FileNotFoundError naming what is missing.

    Complete: config, safetensors weights (every shard of an index), tokenizer, tokenizer config,
    image processor config and a chat template.
    """
    model_dir = Path(model_dir)
    hint = "build one with reasoner.models.build_base_model or point at a complete Hugging Face model directory"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist: {hint}")
    for what, names in _REQUIRED:
        if not any((model_dir / name).is_file() for name in names):
            raise FileNotFoundError(
                f"{model_dir} is not a complete model directory: {what} ({' or '.join(names)}) is missing; {hint}"
            )
    for path in _weight_files(model_dir):
        if not path.is_file():
            raise FileNotFoundError(
                f"{model_dir} is not a complete model directory: weight shard {path.name} is missing; {hint}"
            )
    if not _has_chat_template(model_dir):
        raise FileNotFoundError(
            f"{model_dir} is not a complete model directory: no chat template (chat_template.jinja, "
            f"chat_template.json or a chat_template entry in tokenizer_config.json); {hint}"
        )
    return model_dir


def load_processor(model_dir: str | Path) -> ProcessorMixin:
    """The processor (tokenizer, chat template, image processor) of a model directory."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(check_model_dir(model_dir)))


def load_model(model_dir: str | Path, dtype: torch.dtype | str = "float32", device: str = "cpu") -> PreTrainedModel:
    """The model of a model directory in transformers (any LLaVA-family class), in eval mode.

    Raises a ValueError if the weights do not match the model (missing or unexpected weights).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    model_dir = check_model_dir(model_dir)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model, info = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=dtype, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise ValueError(f"the weights in {model_dir} do not match its config: {problems}")
    return model.to(device).eval()
