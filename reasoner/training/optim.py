"""The optimizer's parameter groups: the vision tower may learn at its own rate (paper SFT: 5e-7).

``VisionTowerLR`` is a mixin for an HF ``Trainer`` subclass: it splits every parameter group of
the Trainer's optimizer (AdamW, which the Trainer owns also under DeepSpeed) into the vision
tower's parameters, at ``vision_tower_lr``, and the rest. The schedule scales both alike.
``freeze_vision_tower`` is for a rate of 0.
"""

from __future__ import annotations

from typing import Any

VISION_TOWER = "vision_tower"


def is_vision_tower(name: str) -> bool:
    """True for a parameter of the vision encoder (``model.vision_tower...``)."""
    return f"{VISION_TOWER}." in name or name.startswith(VISION_TOWER)


def freeze_vision_tower(model: Any) -> int:
    """Stop gradients into the vision tower; returns the number of frozen parameter tensors."""
    frozen = 0
    for name, param in model.named_parameters():
        if is_vision_tower(name):
            param.requires_grad_(False)
            frozen += 1
    return frozen


def split_param_groups(groups: list[dict[str, Any]], tower_ids: set[int], tower_lr: float) -> list[dict[str, Any]]:
    """Each group split in two: parameters not in ``tower_ids`` as they were, those in it at ``tower_lr``."""
    out = []
    for group in groups:
        rest = [p for p in group["params"] if id(p) not in tower_ids]
        tower = [p for p in group["params"] if id(p) in tower_ids]
        if rest:
            out.append({**group, "params": rest})
        if tower:
            out.append({**group, "params": tower, "lr": tower_lr})
    return out


class VisionTowerLR:
    """Trainer mixin: the vision tower at ``self.vision_tower_lr`` (None: the global rate)."""

    vision_tower_lr: float | None = None

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.vision_tower_lr is None:
            return optimizer
        model = self.model if model is None else model
        tower = {id(p) for name, p in model.named_parameters() if is_vision_tower(name)}
        groups = split_param_groups(optimizer.param_groups, tower, self.vision_tower_lr)
        self.optimizer = type(optimizer)(groups, **optimizer.defaults)
        return self.optimizer
