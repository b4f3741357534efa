"""Models: builders of the embedded default checkpoints, loading, and the log-prob scorer.

- ``tokenizer``: the locally trained word-level, byte-fallback tokenizer and its chat template;
- ``presets`` and ``build``: ``PRESETS`` (``tiny``, ``small``, ``tiny-next``) and
  ``build_base_model``;
- ``checkpoint``: saving in the layout transformers and vLLM both load, ``load_model``,
  ``load_processor``, ``check_model_dir``;
- ``scorer``: the ``LogProbScorer`` contract, its transformers backend and ``make_scorer`` (either backend); ``vllm_backend``: the
  vLLM engine factory and backend.

torch, transformers and vLLM are imported inside functions: importing this package is cheap.
"""

from reasoner.models.build import build_base_model, build_processor, count_parameters, model_config
from reasoner.models.checkpoint import check_model_dir, load_model, load_processor, save_model, to_vllm_layout
from reasoner.models.presets import PRESETS, ModelPreset, get_preset
from reasoner.models.scorer import LogProbScorer, ScoreRequest, TokenLogProbs, TransformersScorer, make_scorer
from reasoner.models.tokenizer import CHAT_TEMPLATE, build_tokenizer, train_tokenizer
from reasoner.models.vllm_backend import VLLMScorer, make_vllm_engine, shutdown_vllm_engine

__all__ = [
    "CHAT_TEMPLATE",
    "PRESETS",
    "LogProbScorer",
    "ModelPreset",
    "ScoreRequest",
    "TokenLogProbs",
    "TransformersScorer",
    "VLLMScorer",
    "build_base_model",
    "build_processor",
    "build_tokenizer",
    "check_model_dir",
    "count_parameters",
    "get_preset",
    "load_model",
    "load_processor",
    "make_scorer",
    "make_vllm_engine",
    "model_config",
    "save_model",
    "shutdown_vllm_engine",
    "to_vllm_layout",
    "train_tokenizer",
]
