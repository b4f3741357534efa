"""Pretrained checkpoints as a run's base model (``model.path``): fetch, check, and lay out for vLLM.

A Hugging Face LLaVA or LLaVA-NeXT release (the paper starts from LLaMA3-LLaVA-NeXT-8B, whose
transformers form is ``llava-hf/llama3-llava-next-8b-hf``) comes as ``config.json``, safetensors
shards with their index, a tokenizer that holds the image token, a processor config and a chat
template. :func:`import_checkpoint` copies one from a local directory, a bucket URI (any
filesystem pyarrow opens: ``s3://``, ``gs://``, ``file://``) or the hub (``huggingface_hub``, where
the network allows), then :func:`check_checkpoint` refuses what later stages could not use, each
problem named with its fix; the CLIP tower's weights are rewritten into the names vLLM reads
where they are not (``reasoner.models.checkpoint.to_vllm_layout``). Every later stage loads the
model's own processor and chat template from the imported directory.

Pickled weights (``pytorch_model.bin``) are refused: loading them runs code from the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

SUPPORTED = {"LlavaForConditionalGeneration": "llava", "LlavaNextForConditionalGeneration": "llava_next"}
"""Architectures every stage runs (transformers class -> model_type)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


class CheckpointError(ValueError):
    """A pretrained checkpoint cannot be used; the message names what is wrong and the fix."""


def _where(source: str) -> str:
    if "://" in source:
        return "uri"
    if os.path.isdir(os.path.expanduser(source)):
        return "local"
    if _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        return "hub"
    return "missing"


def fetch_checkpoint(source: str, dest: str) -> None:
    """Copy the checkpoint ``source`` (local directory, URI or hub id) into the directory ``dest``."""
    import pyarrow.fs as pafs

    kind = _where(source)
    if kind == "missing":
        raise CheckpointError(f"model.path={source!r}: no such directory, and not a bucket URI or a hub id "
                              "(owner/name)")
    os.makedirs(dest, exist_ok=True)
    if kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=source, local_dir=dest, allow_patterns=_HUB_FILES)
        except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated: all end the same way
            raise CheckpointError(
                f"model.path={source!r}: could not fetch it from the Hugging Face hub ({type(e).__name__}: {e}); "
                "download it where the network allows (huggingface-cli download) and give the directory or a "
                "bucket URI") from None
        return
    if kind == "local":
        fs, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(source))
    else:
        try:
            fs, path = pafs.FileSystem.from_uri(source)
        except (ValueError, OSError) as e:
            raise CheckpointError(f"model.path={source!r}: cannot open the bucket: {e}") from None
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise CheckpointError(f"model.path={source!r} is not a directory of a checkpoint")
    pafs.copy_files(path, dest, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not readable JSON: {e}") from None


def check_checkpoint(model_dir: str | Path, source: str | None = None) -> dict[str, Any]:
    """Check an imported checkpoint and put its weights in vLLM's layout; its description.

    Checked: a supported architecture, safetensors weights (every shard of the index), a tokenizer
    with the config's image token, a processor config, and a chat template that renders one user
    turn with the image. Returns ``{"architecture", "model_type", "image_token", "image_token_id",
    "parameters"}``.
    """
    from reasoner.models.checkpoint import (
        WEIGHTS_FILE,
        WEIGHTS_INDEX_FILE,
        check_model_dir,
        to_vllm_layout,
    )

    model_dir = Path(model_dir)
    name = source or str(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{name}: no config.json; give the root of a Hugging Face model release")
    config = _read_json(config_path)
    architectures = config.get("architectures") or []
    architecture = next((a for a in architectures if a in SUPPORTED), None)
    if architecture is None:
        raise CheckpointError(f"{name}: architecture {architectures or config.get('model_type')!r} is not supported; "
                              f"use a checkpoint of {', '.join(SUPPORTED)} (e.g. llava-hf/llama3-llava-next-8b-hf)")
    has_safetensors = (model_dir / WEIGHTS_FILE).is_file() or (model_dir / WEIGHTS_INDEX_FILE).is_file()
    if not has_safetensors:
        pickled = sorted(p.name for p in model_dir.glob("*.bin"))
        if pickled:
            raise CheckpointError(f"{name}: the weights are pickled ({', '.join(pickled)}), which can run code when "
                                  "loaded; convert them to safetensors where you trust the file")
        raise CheckpointError(f"{name}: no weights ({WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE})")
    image_token_id = config.get("image_token_id", config.get("image_token_index"))
    if image_token_id is None:
        raise CheckpointError(f"{name}: config.json names no image token (image_token_id / image_token_index)")
    tokenizer = _tokenizer(model_dir, name)
    image_token = tokenizer.convert_ids_to_tokens(int(image_token_id))
    if image_token is None or image_token == tokenizer.unk_token:
        raise CheckpointError(f"{name}: the image token id {image_token_id} of config.json is not in the tokenizer; "
                              "the tokenizer must hold the image token (e.g. <image>) the model was trained with")
    if not any((model_dir / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise CheckpointError(f"{name}: no image processor config (preprocessor_config.json)")
    try:  # every file a model directory needs, every shard of the index among them, before any rewrite
        check_model_dir(model_dir)
    except FileNotFoundError as e:
        raise CheckpointError(str(e).replace(str(model_dir), name)) from None
    to_vllm_layout(model_dir)
    _check_template(model_dir, name, image_token)
    return {"architecture": architecture, "model_type": SUPPORTED[architecture], "image_token": image_token,
            "image_token_id": int(image_token_id), "parameters": _count_parameters(model_dir)}


def _tokenizer(model_dir: Path, name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{name}: the tokenizer does not load: {e}") from None


def _check_template(model_dir: Path, name: str, image_token: str) -> None:
    """The chat template renders a user turn holding the image as the image token."""
    from reasoner.models.inputs import format_prompt

    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(model_dir), trust_remote_code=False)
        text = format_prompt(processor, "Which bar is tallest?")
    except Exception as e:  # noqa: BLE001 - a template error of any kind is the checkpoint's problem
        raise CheckpointError(f"{name}: the chat template does not render a user turn with an image: {e}") from None
    if text.count(image_token) != 1 or "Which bar is tallest?" not in text:
        raise CheckpointError(f"{name}: the chat template renders an image turn without exactly one {image_token} "
                              f"and the question: {text[:200]!r}")


def _count_parameters(model_dir: Path) -> int:
    """Parameters in the safetensors headers (no weight is read)."""
    from safetensors import safe_open

    from reasoner.models.checkpoint import _weight_files

    total = 0
    for path in _weight_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


def import_checkpoint(source: str, dest: str) -> dict[str, Any]:
    """Fetch ``source`` into ``dest`` and check it (:func:`check_checkpoint`); its description."""
    fetch_checkpoint(source, dest)
    return {"source": source, **check_checkpoint(dest, source)}
