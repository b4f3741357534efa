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
