"""Presets of the embedded default models: small LLaVA-architecture models with random weights.

A preset is an architecture and its sizes; the vocabulary comes from the locally trained
tokenizer and the image size is a parameter of the build (the preset holds its default).

- ``tiny``: for tests (about 0.5M parameters): Llama text part (hidden 64, 2 layers), CLIP tower
  (hidden 64, 2 layers), 32 px images, patch 8: 16 image tokens.
- ``small``: the main job's model (about 6M parameters), as measured in the trial runs: Llama
  text part (hidden 256, 4 layers), CLIP tower (hidden 192, 4 layers), patch 8, features of the
  last vision layer (better than LLaVA's second-to-last here); 48 px images (36 image tokens).
- ``tiny-next``: the ``tiny`` sizes as a ``LlavaNextForConditionalGeneration`` (any-resolution
  tiling with ``image_grid_pinpoints``), so tests exercise the production model class.

vLLM's CPU attention takes head sizes in {32, 64, 80, ...}: text heads here are 32 or 64 wide.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES = ("llava", "llava_next")


@dataclass(frozen=True)
class ModelPreset:
    """Sizes of a LLaVA-family model: a Llama text part, a CLIP vision tower, a 2-layer projector."""

    name: str
    architecture: str  # "llava" or "llava_next"
    text_hidden_size: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate_size: int  # the SwiGLU width, about 8/3 of the hidden size as in Llama
    vision_hidden_size: int
    vision_layers: int
    vision_heads: int
    vision_intermediate_size: int
    patch_size: int
    image_size: int  # the default; a build may take another multiple of patch_size
    vision_feature_layer: int = -1
    max_position_embeddings: int = 1024
    # LLaVA-NeXT only: the tiling resolutions, in multiples of image_size (as (height, width)).
    grid_pinpoints: tuple[tuple[int, int], ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"ModelPreset.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.text_hidden_size % self.text_heads or self.text_heads % self.text_kv_heads:
            raise ValueError(
                f"preset {self.name!r}: text_hidden_size {self.text_hidden_size} must divide into "
                f"text_heads {self.text_heads}, and those into text_kv_heads {self.text_kv_heads}"
            )
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError(
                f"preset {self.name!r}: vision_hidden_size {self.vision_hidden_size} must be a "
                f"multiple of vision_heads {self.vision_heads}"
            )
        if self.architecture == "llava_next" and not self.grid_pinpoints:
            raise ValueError(f"preset {self.name!r}: a llava_next preset needs grid_pinpoints")
        check_image_size(self.image_size, self.patch_size)

    def image_tokens(self, image_size: int | None = None) -> int:
        """Image tokens of one base-resolution view: (image_size / patch_size) ** 2."""
        side = (image_size or self.image_size) // self.patch_size
        return side * side


def check_image_size(image_size: object, patch_size: int) -> int:
    """``image_size`` if it is a positive multiple of ``patch_size``, else a ValueError."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int (pixels), got {image_size!r}")
    if image_size % patch_size:
        lower = max(patch_size, image_size - image_size % patch_size)
        raise ValueError(
            f"image_size={image_size} is not a multiple of the vision tower's patch size "
            f"{patch_size}: use {lower} or {lower + patch_size}"
        )
    return image_size


_TINY = dict(
    text_hidden_size=64, text_layers=2, text_heads=2, text_kv_heads=1, text_intermediate_size=176,
    vision_hidden_size=64, vision_layers=2, vision_heads=2, vision_intermediate_size=256,
    patch_size=8, image_size=32, max_position_embeddings=512,
)  # fmt: skip

PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(name="tiny", architecture="llava", description="tests: about 0.5M parameters", **_TINY),
    "small": ModelPreset(
        name="small",
        architecture="llava",
        text_hidden_size=256, text_layers=4, text_heads=4, text_kv_heads=4, text_intermediate_size=688,
        vision_hidden_size=192, vision_layers=4, vision_heads=3, vision_intermediate_size=768,
        patch_size=8, image_size=48,
        description="the embedded default's main model: about 6M parameters",
    ),  # fmt: skip
    "tiny-next": ModelPreset(
        name="tiny-next",
        architecture="llava_next",
        # LLaVA-NeXT's own pinpoints (336 px tiles: 1x2, 2x1, 2x2, 3x1, 1x3) in tiles of image_size.
        grid_pinpoints=((1, 2), (2, 1), (2, 2), (3, 1), (1, 3)),
        description="tests: the tiny sizes as LlavaNextForConditionalGeneration",
        **_TINY,
    ),
}


def get_preset(name: str | ModelPreset) -> ModelPreset:
    """The preset called ``name`` (a ``ModelPreset`` passes through), else a ValueError listing them."""
    if isinstance(name, ModelPreset):
        return name
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model preset {name!r}: choose one of {sorted(PRESETS)}") from None
