"""The vision tower's parameter groups, the progress callback and the metrics file."""

from __future__ import annotations

import torch
from transformers import Trainer, TrainingArguments

from reasoner.training.optim import is_vision_tower, split_param_groups
from reasoner.training.metrics import read_metrics, step_records, write_metrics
from reasoner.training.progress import StepMetrics


def test_vision_tower_parameters_get_their_own_rate() -> None:
    assert is_vision_tower("model.vision_tower.encoder.layers.0.mlp.fc1.weight")
    assert not is_vision_tower("model.language_model.layers.0.mlp.up_proj.weight")
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    groups = [{"params": [a, b], "lr": 1e-3, "weight_decay": 0.1}, {"params": [c], "lr": 1e-3, "weight_decay": 0.0}]
    out = split_param_groups(groups, {id(b), id(c)}, 1e-4)
    assert [(len(g["params"]), g["lr"], g["weight_decay"]) for g in out] == [(1, 1e-3, 0.1), (1, 1e-4, 0.1),
                                                                              (1, 1e-4, 0.0)]


def test_metrics_file_holds_one_record_per_logged_step(tmp_path) -> None:
    history = [{"loss": 0.7, "step": 1, "rewards/margins": 0.0, "steps_per_second": 3.0},
               {"loss": 0.6, "step": 2, "rewards/margins": 0.2, "steps_per_second": 3.5},
               {"train_runtime": 1.0, "step": 2}]
    assert len(step_records(history)) == 2
    path = write_metrics(history, tmp_path)
    assert read_metrics(path) == history[:2]


class _Line(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, y):
        return {"loss": ((self.w * x - y) ** 2).mean()}


def test_the_final_step_is_logged_between_logging_steps(tmp_path) -> None:
    # 5 steps, a log every 3: the trainer alone logs step 3 only; the metrics must end at step 5.
    data = [{"x": torch.tensor([1.0]), "y": torch.tensor([2.0])}] * 10
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=5, logging_steps=3, per_device_train_batch_size=2,
                             learning_rate=0.1, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True)
    trainer = Trainer(model=_Line(), args=args, train_dataset=data, callbacks=[StepMetrics()])
    trainer.train()
    records = step_records(trainer.state.log_history)
    assert [r["step"] for r in records] == [3, 5]
    assert all(r["steps_per_second"] > 0 for r in records)
    assert records[1]["loss"] < records[0]["loss"]
