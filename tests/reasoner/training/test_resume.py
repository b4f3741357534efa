"""A resumed SFT run trains on the same batches as an uninterrupted one: the worker's memory-mapped
dataset is rebuilt in the same order, so the HF Trainer's resume (the seeded sampler, the seen
batches skipped) lands where the checkpoint left off. (The stage's own resume, through Ray Train
and DeepSpeed, is tests/jobs/test_train_sft.py's killed worker.)"""

from __future__ import annotations

import shutil

import pyarrow as pa

from reasoner.config import config_hash
from reasoner.data.images import encode_png
from reasoner.rundir import RunDir, StageCounts


def _run(root) -> RunDir:
    from PIL import Image

    run = RunDir(str(root))
    colors = ("red", "blue", "green", "white", "black", "yellow")
    rows = [{"id": f"q{i:02d}", "image": encode_png(Image.new("RGB", (32, 32), colors[i % 6])),
             "prompt": f"What is the value of the red bar? {i}",
             "completion": " ".join(["The red bar is", str(i)] * (1 + i % 4)) + f"\n### Answer: {i}", "mode": "cot"}
            for i in range(24)]
    for k, start in enumerate(range(0, 24, 10)):
        run.write_part("sft_data", f"part-{k}", pa.Table.from_pylist(rows[start:start + 10]), schema_name="sft_data")
    run.finish("sft_data", stage="test", config={}, config_hash=config_hash("sft"), counts=StageCounts(24, 24))
    return run


def _batches(run: RunDir, model_dir, scratch, output: str, resume: str | None = None) -> list[list[str]]:
    """The completions of each batch an SFT trainer over the worker's dataset collates."""
    import trl

    from reasoner.models import load_model, load_processor
    from reasoner.training.data import select_sft, sft_training_dataset
    from reasoner.training.sft import make_sft_trainer

    scratch.mkdir(exist_ok=True)
    dataset = sft_training_dataset(run, select_sft(run, "cot", 0, seed=0), str(scratch))  # as a restarted worker
    args = trl.SFTConfig(output_dir=output, use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=2,
                         max_steps=4, save_steps=2, logging_steps=1, seed=0, data_seed=0, learning_rate=1e-3,
                         remove_unused_columns=False, completion_only_loss=True, gradient_checkpointing=False,
                         dataloader_num_workers=0, disable_tqdm=True)
    trainer = make_sft_trainer(model=load_model(model_dir).train(), processor=load_processor(model_dir), args=args,
                               dataset=dataset, peft_config=None, callbacks=[])
    seen: list[list[str]] = []
    collate = trainer.data_collator

    def recording(examples):
        seen.append([e["completion"][0]["content"][0]["text"] for e in examples])
        return collate(examples)

    trainer.data_collator = recording
    trainer.train(resume_from_checkpoint=resume)
    return seen


def test_a_resumed_run_trains_on_the_batches_the_checkpoint_had_not_seen(tiny_model_dir, tmp_path) -> None:
    run = _run(tmp_path / "run")
    straight = _batches(run, tiny_model_dir, tmp_path / "a", str(tmp_path / "out-a"))
    # Four steps of distinct batches (the trainer may collate one batch ahead of the last step).
    assert len(straight) >= 4 and len({tuple(b) for b in straight[:4]}) == 4
    resumed_dir = tmp_path / "out-b"
    shutil.copytree(tmp_path / "out-a" / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = _batches(run, tiny_model_dir, tmp_path / "b", str(resumed_dir), resume=str(resumed_dir / "checkpoint-2"))
    assert resumed == straight[2:]  # steps 3 and 4 on the batches of the uninterrupted run
