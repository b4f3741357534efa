"""Build the embedded default's base model: tokenizer, random-weight LLaVA and its processor.

``build_base_model(output_dir, preset, texts=...)`` trains the tokenizer on ``texts`` (the
synthetic suite's questions, options and rationales), builds the preset's model from its config
with seeded random weights, and saves a Hugging Face model directory that transformers, TRL and
vLLM load like any LLaVA checkpoint (``reasoner.models.checkpoint``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoner import prompts
from reasoner.models.checkpoint import save_model
from reasoner.models.presets import ModelPreset, check_image_size, get_preset
from reasoner.models.tokenizer import IMAGE_TOKEN, build_tokenizer

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast, ProcessorMixin

logger = logging.getLogger(__name__)

# The prompt text every model sees whatever the suite: the paper's instructions, the caption
# rows' prompt and the marker.
PROMPT_TEXTS = (
    prompts.CAPTION_PROMPT,
    prompts.DIRECT_SHORT,
    prompts.DIRECT_MC,
    prompts.COT_SHORT,
    prompts.COT_MC,
    f"{prompts.ANSWER_MARKER} A",
)

# CLIP's normalisation (LLaVA's image processors use it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def model_config(
    preset: str | ModelPreset,
    tokenizer: PreTrainedTokenizerFast,
    image_size: int | None = None,
) -> PretrainedConfig:
    """The transformers config of ``preset`` for ``tokenizer``'s vocabulary and ``image_size``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaNextConfig

    preset = get_preset(preset)
    image_size = check_image_size(preset.image_size if image_size is None else image_size, preset.patch_size)
    special = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.text_hidden_size,
        intermediate_size=preset.text_intermediate_size,
        num_hidden_layers=preset.text_layers,
        num_attention_heads=preset.text_heads,
        num_key_value_heads=preset.text_kv_heads,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=False,
        **special,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=preset.vision_hidden_size,
        intermediate_size=preset.vision_intermediate_size,
        num_hidden_layers=preset.vision_layers,
        num_attention_heads=preset.vision_heads,
        image_size=image_size,
        patch_size=preset.patch_size,
        projection_dim=preset.vision_hidden_size,
    )
    common: dict[str, Any] = dict(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=preset.vision_feature_layer,
        vision_feature_select_strategy="default",  # drop CLIP's class token
        projector_hidden_act="gelu",
        image_seq_length=preset.image_tokens(image_size),
        tie_word_embeddings=False,
        **special,
    )
    if preset.architecture == "llava":
        return LlavaConfig(**common)
    return LlavaNextConfig(image_grid_pinpoints=grid_pinpoints(preset, image_size), **common)


def grid_pinpoints(preset: ModelPreset, image_size: int) -> list[list[int]]:
    """LLaVA-NeXT's tiling resolutions in pixels: the preset's tile multiples times image_size."""
    return [[rows * image_size, cols * image_size] for rows, cols in preset.grid_pinpoints]


def build_processor(
    preset: str | ModelPreset,
    tokenizer: PreTrainedTokenizerFast,
    image_size: int | None = None,
) -> ProcessorMixin:
    """The preset's processor: a CLIP-normalising image processor at ``image_size`` and the tokenizer."""
    from transformers import CLIPImageProcessor, LlavaNextImageProcessor, LlavaNextProcessor, LlavaProcessor

    preset = get_preset(preset)
    image_size = check_image_size(preset.image_size if image_size is None else image_size, preset.patch_size)
    image_kwargs: dict[str, Any] = dict(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        do_convert_rgb=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    processor_kwargs: dict[str, Any] = dict(
        tokenizer=tokenizer,
        patch_size=preset.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN,
    )
    if preset.architecture == "llava":
        return LlavaProcessor(image_processor=CLIPImageProcessor(**image_kwargs), **processor_kwargs)
    image_processor = LlavaNextImageProcessor(image_grid_pinpoints=grid_pinpoints(preset, image_size), **image_kwargs)
    return LlavaNextProcessor(image_processor=image_processor, **processor_kwargs)


def random_model(config: PretrainedConfig, seed: int = 0):
    """A model of ``config`` (LLaVA or LLaVA-NeXT) with weights drawn from ``seed``, in fp32."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    cls = LlavaForConditionalGeneration if isinstance(config, LlavaConfig) else LlavaNextForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.to(torch.float32).eval()


def count_parameters(model) -> int:
    """The number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())


def build_base_model(
    output_dir: str | Path,
    preset: str | ModelPreset = "small",
    *,
    texts: Iterable[str],
    image_size: int | None = None,
    seed: int = 0,
    tokenizer_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Train the tokenizer on ``texts``, build ``preset`` with random weights, save to ``output_dir``.

    ``texts`` are the training text (e.g. ``reasoner.data.synthetic.suite_text(items)``); the
    paper's instructions and the answer marker are always added to the tokenizer's words.
    ``image_size`` defaults to the preset's and must be a multiple of its patch size.
    ``tokenizer_kwargs`` go to ``reasoner.models.tokenizer.train_tokenizer``. Returns the model
    directory (config, safetensors weights in the layout vLLM reads, tokenizer, chat template,
    processor).
    """
    preset = get_preset(preset)
    image_size = check_image_size(preset.image_size if image_size is None else image_size, preset.patch_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    tokenizer = build_tokenizer(texts, required_texts=PROMPT_TEXTS, **(tokenizer_kwargs or {}))
    config = model_config(preset, tokenizer, image_size)
    model = random_model(config, seed)
    processor = build_processor(preset, tokenizer, image_size)
    output_dir = Path(output_dir)
    save_model(model, output_dir, processor=processor)
    logger.info(
        "built %s model (%s, %.2fM parameters, %d px images, vocabulary %d) in %s",
        preset.name, type(model).__name__, count_parameters(model) / 1e6, image_size, len(tokenizer), output_dir,
    )  # fmt: skip
    return output_dir
