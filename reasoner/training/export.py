"""Export of a trained model into the run: Hugging Face format that transformers and vLLM load.

Full fine-tuning: safetensors in the layout vLLM reads (``reasoner.models.to_vllm_layout``), with
the processor (tokenizer, chat template, image processor), so ``<run>/models/sft`` is a model
directory like ``<run>/models/base``. LoRA: a peft adapter (``adapter_config.json``,
``adapter_model.safetensors``) plus the processor; its base is the run's artifact named in
``base_model.json`` (``{"artifact": "models/sft"}``), found through the run by
:func:`resolve_adapter_base` (``adapter_config.json`` holds the base's path at training time too).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoner.models.checkpoint import check_model_dir, to_vllm_layout
from reasoner.rundir import RunDir

if TYPE_CHECKING:
    from transformers import Trainer

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
BASE_MODEL_FILE = "base_model.json"


def is_adapter_dir(path: str | Path) -> bool:
    """True if ``path`` holds a peft adapter rather than a whole model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def copy_model_files(checkpoint_dir: str | Path, target: str | Path) -> Path:
    """Copy the model (or adapter) and processor files of an HF checkpoint to ``target``: its top-level
    files without optimizer, scheduler, RNG states and training arguments (``.pt``, ``.pth``, ``.bin``)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for source in Path(checkpoint_dir).iterdir():
        if source.is_file() and source.suffix not in (".pt", ".pth", ".bin") and source.name != "trainer_state.json":
            shutil.copy2(source, target / source.name)
    return target


def export_trained(trainer: Trainer, processor: Any, run: RunDir, artifact: str, *, base_artifact: str,
                   base_dir: str, extra_files: dict[str, Any] | None = None, finished_checkpoint: str | None = None
                   ) -> None:
    """Save ``trainer``'s model to ``<run>/<artifact>`` with its metrics file (call on every worker:
    under ZeRO-3 saving gathers the weights; rank 0 writes). ``finished_checkpoint``: an HF
    checkpoint of the finished training to export instead (a rerun after training ended).
    ``extra_files``: JSON files to add (name -> data)."""
    from reasoner.training.metrics import write_metrics

    local = run.path(artifact) if run.is_local else tempfile.mkdtemp(prefix="reasoner-export-")
    if finished_checkpoint is None:
        trainer.save_model(local)
    if not trainer.is_world_process_zero():
        return
    if finished_checkpoint is not None:
        copy_model_files(finished_checkpoint, local)
    processor.save_pretrained(local)
    out = Path(local)
    for stale in out.glob("training_args.bin"):
        stale.unlink()
    write_metrics(trainer.state.log_history, out)
    if is_adapter_dir(out):
        config = json.loads((out / ADAPTER_CONFIG).read_text())
        config["base_model_name_or_path"] = base_dir
        (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (out / BASE_MODEL_FILE).write_text(json.dumps({"artifact": base_artifact}) + "\n")
    else:
        to_vllm_layout(out)
        check_model_dir(out)
    for name, data in (extra_files or {}).items():
        (out / name).write_text(json.dumps(data, indent=2) + "\n")
    if not run.is_local:
        run.upload(local, artifact)
        shutil.rmtree(local, ignore_errors=True)
    logger.info("exported %s to %s", "the LoRA adapter" if is_adapter_dir(out) else "the model", run.path(artifact))


def resolve_adapter_base(run: RunDir, adapter_dir: str | Path, cache_dir: str) -> str:
    """The local directory of a LoRA adapter's base model, found through the run."""
    record = json.loads((Path(adapter_dir) / BASE_MODEL_FILE).read_text())
    return run.local_path(record["artifact"], cache_dir=cache_dir)


def load_trained(run: RunDir, artifact: str, cache_dir: str, *, dtype: str = "float32"):
    """A trained model of the run in transformers: the model, or base + adapter merged for LoRA."""
    from reasoner.models.checkpoint import load_model

    directory = run.local_path(artifact, cache_dir=cache_dir)
    if not is_adapter_dir(directory):
        return load_model(directory, dtype=dtype)
    from peft import PeftModel

    base = load_model(resolve_adapter_base(run, directory, cache_dir), dtype=dtype)
    return PeftModel.from_pretrained(base, directory).merge_and_unload().eval()


@contextmanager
def engine_model_dir(run: RunDir, artifact: str, cache_dir: str) -> Iterator[str]:
    """A local model directory of a trained artifact that vLLM loads: the artifact itself, or for a
    LoRA adapter its base with the adapter merged in (a temporary directory, removed afterwards)."""
    from reasoner.models.checkpoint import load_processor

    directory = run.local_path(artifact, cache_dir=cache_dir)
    if not is_adapter_dir(directory):
        yield directory
        return
    merged = tempfile.mkdtemp(prefix="reasoner-merged-")
    try:
        load_trained(run, artifact, cache_dir).save_pretrained(merged)
        load_processor(resolve_adapter_base(run, directory, cache_dir)).save_pretrained(merged)  # LoRA keeps it
        to_vllm_layout(merged)
        yield str(check_model_dir(merged))
    finally:
        shutil.rmtree(merged, ignore_errors=True)
