"""Training stages on Ray Train: SFT (B) and DPO (C3) with TRL under DeepSpeed ZeRO.

- ``config``: the ``sft`` and ``dpo`` config sections (``TrainConfig`` shared);
- ``data``: reading and checking ``sft_data`` / ``pairs`` / ``dpo_ref``, TRL-form datasets;
- ``deepspeed``: ZeRO-2 / ZeRO-3 configs; ``raytrain``: the ``TorchTrainer`` wiring, checkpoints,
  recovery; ``worker``: the per-worker train-and-export body;
- ``sft``, ``dpo``: the stages; ``reference``: the DPO reference pass into ``<run>/dpo_ref``;
- ``progress``: per-step metrics; ``export``: the model into the run (vLLM layout, LoRA adapter).

torch, TRL, DeepSpeed and Ray are imported inside functions: importing the package is cheap.
"""
