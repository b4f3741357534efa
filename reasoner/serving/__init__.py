"""Stage (D): serving a trained run. ``config`` (the ``serve`` section), ``generator`` (vLLM's
async engine), ``verifier`` (the DPO model's implicit reward through the shared scorer) and
``strategies`` (each ``/v1/reason`` strategy over injected generate and verify callables). The Ray
Serve application that wires them is ``serve_apps/reason.py``."""
