"""Tests of reasoner.models.tokenizer: the locally trained word-level, byte-fallback tokenizer."""

from __future__ import annotations

import pytest

from reasoner.models.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    IMAGE_TOKEN,
    PAD_TOKEN,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    build_tokenizer,
    train_tokenizer,
)
from reasoner.prompts import COT_SHORT, chat_messages


@pytest.fixture(scope="module")
def tokenizer(model_texts):
    return build_tokenizer(model_texts, required_texts=[COT_SHORT])


def pieces(tokenizer, text: str) -> list[str]:
    """The tokens of ``text`` as text (``" red"``, not ``"Ġred"``)."""
    return [tokenizer.decode([i]) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


@pytest.mark.parametrize(
    "text",
    [
        "The red bar is 4.\nThe blue bar is 7.\n4 + 7 = 11.\n### Answer: 11",
        "What is the sum of the red bar and the blue bar?",
        "A. 3\nB. 12\n\n  two  spaces, tabs\tand trailing space ",
        "Unseen words: zebra, Straße, naïve, 東京, emoji 😀, and 1234567 or 3.14%.",
        "",
    ],
)
def test_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids


def test_known_words_are_single_tokens(tokenizer):
    text = "What is the sum of the red bar and the blue bar?"
    assert pieces(tokenizer, text) == ["What", " is", " the", " sum", " of", " the", " red", " bar", " and",
                                       " the", " blue", " bar", "?"]  # fmt: skip


def test_required_texts_become_words(tokenizer):
    assert pieces(tokenizer, COT_SHORT) == ["Generate", " a", " reason", " first", " and", " then", " output",
                                            " a", " short", " answer", "."]  # fmt: skip


@pytest.mark.parametrize("number", [0, 7, 11, 99, 100, 256, 999])
def test_numbers_up_to_999_are_one_token(tokenizer, number):
    assert pieces(tokenizer, str(number)) == [str(number)]
    assert pieces(tokenizer, f"The bar is {number}.")[-3:] == [" is", f" {number}", "."]


def test_every_number_is_one_token(tokenizer):
    for number in range(1000):
        assert len(tokenizer(f"{number} {number}", add_special_tokens=False)["input_ids"]) == 2, number


def test_longer_numbers_split_in_groups_of_three(tokenizer):
    assert pieces(tokenizer, "1234567") == ["123", "456", "7"]
    assert pieces(tokenizer, "x 1000") == ["x", " 100", "0"]


def test_answer_marker_is_a_fixed_sequence(tokenizer):
    marker = ["###", " Answer", ":"]
    assert pieces(tokenizer, "### Answer: 11") == [*marker, " 11"]
    assert pieces(tokenizer, "4 + 7 = 11.\n### Answer: B")[-5:] == ["\n", *marker, " B"]


def test_newline_is_a_token(tokenizer):
    text = "The red bar is 4.\nThe blue bar is 7.\n### Answer: 11"
    newline_id = tokenizer.convert_tokens_to_ids("Ċ")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(newline_id) == text.count("\n")
    assert pieces(tokenizer, "\n") == ["\n"]


def test_unseen_word_falls_back_to_smaller_pieces(tokenizer):
    text = " xylophone"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    assert tokenizer.decode(ids) == text


def test_special_tokens(tokenizer):
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    assert tokenizer.bos_token == BOS_TOKEN and tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.image_token == IMAGE_TOKEN
    for token in SPECIAL_TOKENS:  # each is one token, also inside text
        assert tokenizer(f"a{token}b", add_special_tokens=False)["input_ids"][1] == ids[token]


def test_no_special_tokens_added_by_the_tokenizer(tokenizer):
    assert tokenizer("hello")["input_ids"] == tokenizer("hello", add_special_tokens=False)["input_ids"]


def test_chat_template_generation_prompt(tokenizer):
    messages = chat_messages("What is the value of the red bar?")
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == f"{BOS_TOKEN}{ROLE_TOKENS['user']}{IMAGE_TOKEN}What is the value of the red bar?{ROLE_TOKENS['assistant']}"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)) == 1


def test_chat_template_continuation_is_the_assistant_text(tokenizer):
    response = "The red bar is 4.\n### Answer: 4"
    prompt = tokenizer.apply_chat_template(chat_messages("Q?"), add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(chat_messages("Q?", response), tokenize=False)
    assert full == prompt + response + EOS_TOKEN
    # Token level too: prompt tokens, then the response's own tokens, then EOS.
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids(full) == ids(prompt) + ids(response) + [tokenizer.eos_token_id]


def test_chat_template_string_content_and_system(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == f"{BOS_TOKEN}<|system|>Be brief.<|user|>Hi<|assistant|>"


def test_chat_template_rejects_unknown_role(tokenizer):
    with pytest.raises(Exception, match="unknown role tool"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_saved_tokenizer_loads_with_auto_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "The red bar is 4.\n### Answer: 4 zebra"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.image_token == IMAGE_TOKEN


def test_training_is_deterministic(model_texts):
    a = train_tokenizer(model_texts).to_str()
    b = train_tokenizer(list(reversed(model_texts))).to_str()
    assert a == b


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "texts is empty"),
        ("one string", {}, TypeError, "not one str"),
        (["ok", 3], {}, TypeError, "texts must hold str"),
        (["ok"], {"max_number": 1000}, ValueError, "max_number"),
        (["ok"], {"min_frequency": 0}, ValueError, "min_frequency"),
        (["ok"], {"required_texts": "abc"}, TypeError, "required_texts"),
    ],
)
def test_bad_arguments(texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        train_tokenizer(texts, **kwargs)
