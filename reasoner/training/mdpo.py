"""An image-conditioned preference term in the manner of mDPO (Wang et al. 2024, "mDPO:
Conditional preference optimization for multimodal large language models"), off by default.

Plain DPO on (image, prompt, chosen, rejected) can learn the preference from the text alone and
ignore the image. The conditional term prefers the chosen response under the true image over the
same response under a corrupted image::

    L_cond = -log sigmoid(beta * [(log pi(y_w | I, x) - log ref(y_w | I, x))
                                  - (log pi(y_w | I', x) - log ref(y_w | I', x))])

which is a DPO loss whose "rejected" side is the chosen response with the corrupted image I', so
TRL's loss computes it (``reasoner.training.dpo``) from a batch built by :func:`conditional_batch`.
The stage's loss is ``L_dpo + dpo.mdpo_weight * L_cond``. The corruption (:func:`corrupt_image`)
blanks a seeded random rectangle covering ``mdpo_mask_fraction`` of the image with its mean
colour (mDPO masks or crops most of the image); it is deterministic per pair, so the reference
pass and training see the same corrupted image.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

CORRUPT_IMAGE = "corrupt_image"
CORRUPT_REF = "chosen_corrupt_ref_logp"


def corrupt_image(image: bytes, fraction: float, key: str) -> bytes:
    """``image`` (encoded) with a rectangle of ``fraction`` of its area blanked to its mean colour,
    placed by a seed derived from ``key``; PNG bytes."""
    from PIL import ImageStat

    from reasoner.data.images import decode_image, encode_png

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    picture = decode_image(image).copy()
    width, height = picture.size
    rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
    aspect = rng.uniform(0.5, 2.0)
    box_w = max(1, min(width, round(math.sqrt(fraction * width * height * aspect))))
    box_h = max(1, min(height, round(fraction * width * height / box_w)))
    left, top = rng.randint(0, width - box_w), rng.randint(0, height - box_h)
    mean = tuple(round(c) for c in ImageStat.Stat(picture).mean[:3])
    picture.paste(mean, (left, top, left + box_w, top + box_h))
    return encode_png(picture)


def add_corrupt_images(pairs: Sequence[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """``pairs`` with a ``corrupt_image`` each (:func:`corrupt_image` keyed by id and pair index)."""
    return [{**p, CORRUPT_IMAGE: corrupt_image(p["image"], fraction, f"{p['id']}/{p['pair_index']}")} for p in pairs]


def conditional_batch(collate: Callable[[list[dict]], dict], examples: Sequence[dict[str, Any]],
                      corrupt_images: Sequence[Any]) -> dict[str, Any]:
    """The conditional pair as a DPO batch of TRL's vision collator ``collate``: the chosen
    response with the true image (first half) and with the corrupted image (second half)."""
    import torch

    same = [{**copy.deepcopy(e), "rejected": copy.deepcopy(e["chosen"])} for e in examples]
    corrupted = [{**s, "image": c} for s, c in zip(copy.deepcopy(same), corrupt_images)]
    batch, other = collate(same), collate(corrupted)
    n = len(examples)
    batch["pixel_values"] = torch.cat([batch["pixel_values"][:n], other["pixel_values"][:n]])
    return batch
