"""The embedded default's tokenizer: word-level with byte-level fallback, trained on local text.

The synthetic suite's text has a small closed vocabulary, and a model of a few million
parameters learns fastest when a word or a number is one token. So the tokenizer is a unigram
model (``tokenizers.models.Unigram``) over byte-level pieces:

- pre-tokenisation as GPT-2's (a word carries its leading space: ``"Ġred"``), except that digit
  runs split into groups of at most three digits (``"1234"`` -> ``"123"``, ``"4"``), and the text
  is mapped to the 256 byte characters of ``ByteLevel``;
- the vocabulary: the special tokens, the 256 byte characters (so any text encodes and decodes
  exactly: an unseen word falls back to smaller pieces, down to bytes), every integer from 0 to
  ``max_number`` with and without a leading space, and the pre-tokens of the training text seen
  at least ``min_frequency`` times (the most frequent first, up to ``max_words``);
- piece scores that make the segmentation of a pre-token the one with the fewest pieces (ties go
  to the more frequent pieces): a known word or number is always exactly one token.

So ``"The red bar is 4.\\n### Answer: 11"`` is ``The | Ġred | Ġbar | Ġis | Ġ4 | . | Ċ | ### |
ĠAnswer | : | Ġ11``: a newline is its own token (rationale steps are lines) and the answer
marker is the fixed sequence ``###``, ``ĠAnswer``, ``:`` at the start of a line.

Special tokens: ``<pad>``, ``<s>`` (BOS), ``</s>`` (EOS), ``<unk>`` (never produced: every byte
is in the vocabulary), ``<image>`` and the chat role markers ``<|system|>``, ``<|user|>``,
``<|assistant|>``. The tokenizer adds no special tokens by itself: BOS comes from the chat
template only (``CHAT_TEMPLATE``), so a templated prompt has exactly one BOS whether it is
tokenised with ``add_special_tokens`` or without (vLLM's chat endpoint uses
``add_special_tokens=False``, its offline ``generate`` of a string the default ``True``).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN, *ROLE_TOKENS.values())

# GPT-2's pre-tokenisation without the English contractions, digits in groups of up to three.
PRE_TOKEN_PATTERN = r" ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# A turn is its role marker then its content; an image part is the image token; the assistant
# turn ends with EOS. BOS starts the conversation. The generation prompt is the assistant marker,
# so the continuation of ``add_generation_prompt=True`` is exactly the assistant's text.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] in ['image', 'image_url'] -%}"
    "{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|assistant|>' -}}"
    "{%- endif -%}"
)


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_tokenizer(
    texts: Iterable[str],
    *,
    required_texts: Iterable[str] = (),
    max_number: int = 999,
    min_frequency: int = 2,
    max_words: int = 8192,
) -> Tokenizer:
    """Train the word-level, byte-fallback tokenizer (a ``tokenizers.Tokenizer``) on ``texts``.

    Every pre-token of ``required_texts`` (e.g. the prompts' fixed instructions) becomes a piece
    whatever its count. ``max_number`` (at most 999, the largest three-digit group) bounds the integers that are
    always one token; ``min_frequency`` is the count a pre-token needs to become a piece, and
    ``max_words`` caps how many such pieces are kept (the most frequent).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of str, not one str: wrap it in a list")
    if not isinstance(max_number, int) or not 0 <= max_number <= 999:
        raise ValueError(f"max_number must be an int in [0, 999] (three-digit groups), got {max_number!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be an int >= 1, got {min_frequency!r}")
    if not isinstance(max_words, int) or max_words < 0:
        raise ValueError(f"max_words must be an int >= 0, got {max_words!r}")

    pre_tokenizer = _pre_tokenizer()
    counts: collections.Counter[str] = collections.Counter()
    num_texts = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must hold str, got {type(text).__name__}: {text!r}")
        counts.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text))
        num_texts += 1
    if num_texts == 0:
        raise ValueError("texts is empty: the tokenizer needs some text to learn its words from")
    if isinstance(required_texts, str):
        raise TypeError("required_texts must be an iterable of str, not one str: wrap it in a list")
    required = {piece for text in required_texts for piece, _ in pre_tokenizer.pre_tokenize_str(text)}

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    space = _byte_level(" ")
    numbers = [str(n) for n in range(max_number + 1)]
    numbers += [space + n for n in numbers]
    frequent = (w for w, c in counts.items() if c >= min_frequency and len(w) > 1)
    by_count = sorted(frequent, key=lambda w: (-counts[w], w))
    words = {w for w in (*by_count[:max_words], *required) if len(w) > 1} - set(numbers)
    words = sorted(words, key=lambda w: (-counts[w], w))

    # Scores: -1 a piece (so the fewest pieces win) plus a small log-frequency tie-break that
    # never outweighs one piece (it stays within (-0.5, 0]).
    total = sum(counts.values()) + len(alphabet) + len(numbers)

    def score(piece: str) -> float:
        return -1.0 + 0.01 * max(math.log((counts[piece] + 1) / total), -49.0)

    vocab: list[tuple[str, float]] = [(token, 0.0) for token in SPECIAL_TOKENS]
    vocab += [(piece, score(piece)) for piece in alphabet + numbers + words]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index(UNK_TOKEN), byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    logger.info(
        "trained tokenizer on %d texts: %d tokens (%d words, %d numbers, %d bytes, %d special)",
        num_texts, len(vocab), len(words), len(numbers), len(alphabet), len(SPECIAL_TOKENS),
    )  # fmt: skip
    return tokenizer


def _byte_level(text: str) -> str:
    from tokenizers import pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return "".join(piece for piece, _ in byte_level.pre_tokenize_str(text))


def wrap_tokenizer(tokenizer: Tokenizer, *, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """``tokenizer`` as a ``transformers`` fast tokenizer with the special tokens and chat template.

    ``tokenizer.image_token`` is ``<image>`` (the LLaVA processors read it from there).
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def build_tokenizer(texts: Iterable[str], **train_kwargs) -> PreTrainedTokenizerFast:
    """Train on ``texts`` (``train_tokenizer``) and wrap (``wrap_tokenizer``): the model's tokenizer."""
    return wrap_tokenizer(train_tokenizer(texts, **train_kwargs))
