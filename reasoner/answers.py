"""Answer extraction and scoring: the one definition of a "correct" answer.

``extract_answer`` pulls the final answer out of a chain-of-thought completion (the text after
the last ``### Answer:`` marker). ``score`` grades an answer against the ground truth with the
benchmark's own metric, following the reference implementations in VLMEvalKit
(open-compass/VLMEvalKit, ``vlmeval/dataset/utils/vqa_eval.py``, which adapts the official VQA
evaluation of GT-Vision-Lab/VQA and ``relaxed_correctness`` of google-research/pix2struct).
``is_correct`` turns a score into the yes/no used for filtering and pairing.

Metrics (``METRICS``):

- ``relaxed`` (ChartQA): ``relaxed_correctness``, max over answers.
- ``vqa`` (TextVQA): VQA accuracy after ``process_answer`` normalisation (leave-one-out).
- ``aokvqa`` (A-OKVQA direct answer): the official ``min(1, matches / 3)``, no normalisation.
- ``anls`` (DocVQA, InfoVQA): ``anls_compute`` with the 0.5 threshold of ``hit_calculate``.
- ``mc``: the option letter (from "B", "(B)", "The answer is B", or the option text).
- ``exact``: normalised string equality, numbers compared as numbers.
"""

import math
import re
import string
from collections.abc import Mapping
from types import MappingProxyType

METRICS: tuple[str, ...] = ("relaxed", "vqa", "anls", "mc", "exact", "aokvqa")

_ANSWER_MARKER = re.compile(r"###\s*answer\s*:", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The answer after the last ``### Answer:`` marker, or None.

    The marker is matched case-insensitively with optional spaces (``###Answer:``,
    ``### answer :``, ``### ANSWER:``). The answer is the first non-empty line after the marker,
    stripped; None if there is no marker or nothing but whitespace follows it.
    """
    markers = list(_ANSWER_MARKER.finditer(text))
    if not markers:
        return None
    for line in text[markers[-1].end() :].splitlines():
        if line.strip():
            return line.strip()
    return None


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


CORRECT_THRESHOLD = 0.5
"""The recipe's definition of correct: a score at least this (the run config's ``correct_threshold``)."""


def correct_threshold_field(what: str = "an answer counts as correct") -> float:
    """The ``correct_threshold`` field of a stage's config section: set from the run config's one
    top-level key (``reasoner.options.derived``), passed directly by library callers."""
    from reasoner.options import derived

    return derived(CORRECT_THRESHOLD, f"score at which {what} (the run config's top-level correct_threshold)",
                   "correct_threshold")


def is_correct(score: float, metric: str, threshold: float = CORRECT_THRESHOLD) -> bool:
    """Whether a ``score`` of ``metric`` counts as correct: ``score >= threshold``.

    This is the one definition of "correct" for filtering and pairing. With the default 0.5 a
    VQA answer is correct when at least two annotators agree with it (0.6), an A-OKVQA answer
    when at least two of the three matches needed for full credit are there (2/3 = 0.667; one
    match is 1/3), an ANLS answer when it is within the reference's 0.5 threshold, and the 0/1
    metrics when they are 1.
    """
    _check_metric(metric)
    return score >= threshold


def score(
    prediction: str | None,
    answers: list[str],
    metric: str,
    choices: list[str] | None = None,
) -> float:
    """Score ``prediction`` against the ground-truth ``answers`` with ``metric``, in [0, 1].

    ``choices`` (option texts, in letter order A, B, ...) is used by ``mc`` only. A None
    prediction (no answer extracted) scores 0. Raises ValueError for an unknown metric or an
    empty ``answers`` list, TypeError if ``answers`` is a bare string.
    """
    _check_metric(metric)
    if isinstance(answers, str):
        raise TypeError(f"answers must be a list of strings, got the string {answers!r}; wrap it")
    if not answers:
        raise ValueError("answers is empty; give at least one ground-truth answer")
    if prediction is None:
        return 0.0
    if metric == "relaxed":
        pred = prediction.strip()
        return max(float(relaxed_correctness(a, pred)) for a in answers)
    if metric == "vqa":
        return vqa_accuracy(prediction, answers)
    if metric == "aokvqa":
        return aokvqa_accuracy(prediction, answers)
    if metric == "anls":
        return anls(prediction, answers)
    if metric == "mc":
        return multiple_choice(prediction, answers, choices)
    return exact_match(prediction, answers)


# --- relaxed (ChartQA) -------------------------------------------------------------------------


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    """VLMEvalKit / pix2struct ``relaxed_correctness`` (Methani et al. 2020; Pix2Struct §5.1).

    Both sides parse as floats ("45%" reads as 0.45, so "45%" matches "0.45" but not "45"), and
    the target is non-zero: correct when ``|pred - target| / |target| <= max_relative_change``.
    Otherwise (text, or a zero target, where the relative error is undefined) a
    case-insensitive exact string match. The caller strips the prediction, as ``process_line``.
    """
    pred_float = _to_float(prediction)
    target_float = _to_float(target)
    if pred_float is not None and target_float:
        return abs(pred_float - target_float) / abs(target_float) <= max_relative_change
    return prediction.lower() == target.lower()


# --- vqa (VQA accuracy) ------------------------------------------------------------------------

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">",
                "<", "@", "`", ",", "?", "!")  # fmt: skip
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?<!\d)\.(?!\d)")
_NUMBER_WORDS: Mapping[str, str] = MappingProxyType(
    {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
     "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
)
_ARTICLES = frozenset({"a", "an", "the"})
# VLMEvalKit's table, as "key=value" pairs. Its capitalised keys ("Im", "Ive", "Id've",
# "I'dve") never match the lowercased words and are left out.
_CONTRACTIONS: Mapping[str, str] = MappingProxyType(dict(pair.split("=") for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
howd=how'd howll=how'll hows=how's isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've
itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't
notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's
shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've
somebody'd=somebodyd somebodyd've=somebody'd've somebody'dve=somebody'd've
somebodyll=somebody'll somebodys=somebody's someoned=someone'd someoned've=someone'd've
someone'dve=someone'd've someonell=someone'll someones=someone's somethingd=something'd
somethingd've=something'd've something'dve=something'd've somethingll=something'll
thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're
theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll
theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've
weve=we've werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've
whens=when's whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've
who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're whys=why's
wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've
yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've
y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
youre=you're youve=you've
""".split()))


def _process_punctuation(text: str) -> str:
    """VLMEvalKit ``process_punctuation``: drop or space out punctuation, drop free periods.

    A mark touching a space, or any mark in a text with a digit-comma-digit, is dropped;
    otherwise it becomes a space. Periods not next to a digit are dropped (all of them: the
    reference passes ``re.UNICODE`` as the ``count`` argument, capping it at 32, an accident).
    """
    out = text
    has_number_comma = _COMMA_STRIP.search(text) is not None
    for mark in _PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or has_number_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    """VLMEvalKit ``_process_digit_article``: lowercase, number words to digits, drop
    articles, restore contractions ("dont" -> "don't")."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def process_answer(answer: str) -> str:
    """VLMEvalKit ``process_answer``: the VQA answer normalisation."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(answer))


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy, as VLMEvalKit ``process_line(method='vqa_score')`` + ``hit_calculate``.

    Both sides go through ``process_answer``. For each ground-truth answer i, the accuracy
    against the other answers is ``min(1, #(others equal to the prediction) / 3)``; the score is
    the mean over i (leave-one-out, the official VQA metric). With 10 answers and k matching
    that is 0.3, 0.6, 0.9 for k = 1, 2, 3 and 1.0 from k = 4.

    Deviation: with a single ground-truth answer the reference has no other annotator to agree
    with and scores every prediction 0, so here a single answer scores 1.0 on a (normalised)
    match and 0.0 otherwise.
    """
    pred = process_answer(prediction)
    gts = [process_answer(a) for a in answers]
    if len(gts) == 1:
        return float(gts[0] == pred)
    matches = sum(gt == pred for gt in gts)
    # The others of a matching answer hold matches - 1 hits; of a non-matching one, matches.
    accs = [min(1.0, (matches - (gt == pred)) / 3) for gt in gts]
    return sum(accs) / len(accs)


# --- aokvqa (A-OKVQA direct answer) ------------------------------------------------------------


def aokvqa_accuracy(prediction: str, answers: list[str]) -> float:
    """A-OKVQA's official direct-answer accuracy: ``min(1, matches / 3)``.

    As ``eval_aokvqa`` in allenai/aokvqa ``evaluation/eval_predictions.py`` (direct-answer
    setting): ``num_match = sum([pred == da for da in direct_answers])`` and
    ``min(1.0, num_match / 3.0)``, over all ten direct answers, without VQA's leave-one-out
    averaging. With 10 answers and k matching that is 0, 1/3, 2/3 for k = 0, 1, 2 and 1.0 from
    k = 3.

    The official script compares strings as given: its direct answers are already lower-case,
    normalised annotations, and it expects predictions cleaned the same way. A generated answer
    is not ("Bat", "a bat."), so both sides go through the VQA normalisation (``process_answer``)
    first, as DESIGN.md asks; for the annotations it changes nothing. (The official score also
    leaves out questions marked ``difficult_direct_answer``; that is a choice of rows, not of
    this function.)
    """
    prediction = process_answer(prediction)
    matches = sum(prediction == process_answer(answer) for answer in answers)
    return min(1.0, matches / 3.0)


# --- anls (DocVQA / InfoVQA) -------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for i, cb in enumerate(b, start=1):
        current = [i]
        for j, ca in enumerate(a, start=1):
            cost = 0 if ca == cb else 1
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """ANLS (Biten et al. 2019), as VLMEvalKit ``anls_compute`` + ``hit_calculate``.

    Each side is lowercased, stripped and its whitespace runs collapsed to one space. The
    normalised distance to an answer is ``levenshtein / max(len)`` (0 when both are empty); the
    score is ``1 - min distance`` over the answers, or 0 when that is below ``threshold``.
    """

    def norm(text: str) -> str:
        return " ".join(text.strip().lower().split())

    pred = norm(prediction)
    best = 0.0
    for answer in answers:
        gt = norm(answer)
        length = max(len(gt), len(pred))
        distance = 0.0 if length == 0 else levenshtein(gt, pred) / length
        best = max(best, 1.0 - distance)
    return 0.0 if best < threshold else best


# --- mc (multiple choice) ----------------------------------------------------------------------

_LETTER_ONLY = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")
_LETTER_LEAD = re.compile(r"[(\[]?([A-Z])[)\].:]\s*\S")
_ANSWER_PREFIX = re.compile(
    r"^(?:the\s+)?(?:(?:correct|final|right)\s+)?(?:answer|option|choice)(?:\s+is)?\s*:?\s*",
    re.IGNORECASE,
)
_ANSWER_PHRASE = re.compile(
    r"\b(?i:answer|option|choice)(?:\s+(?i:is))?\s*:?\s*[(\[]?([A-Z])(?![A-Za-z])"
)
_LINKS = frozenset({"is", "or", "and"})  # "A is right", "A or B": the letter, not the article
_TOKEN_SPLIT = re.compile(r"[\s.()\[\],:;!?*#{}\"']+")
_PUNCT_TO_SPACE = str.maketrans({c: " " for c in string.punctuation})


def _normalise_text(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = text.lower().translate(_PUNCT_TO_SPACE).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def _option_letters(choices: list[str] | None) -> str:
    if choices is None:
        return string.ascii_uppercase
    if len(choices) > 26:
        raise ValueError(f"{len(choices)} choices; at most 26 (letters A-Z) are supported")
    return string.ascii_uppercase[: len(choices)]


def _letter_from_text(text: str, choices: list[str]) -> str | None:
    """The letter of the one choice whose normalised text equals ``text``'s."""
    target = _normalise_text(text)
    hits = [i for i, c in enumerate(choices) if target and _normalise_text(c) == target]
    return string.ascii_uppercase[hits[0]] if len(hits) == 1 else None


def _is_word(tokens: list[str], i: int) -> bool:
    """Whether ``tokens[i]`` is the article "A" or the pronoun "I" ("A cat", "I think")."""
    following = tokens[i + 1] if i + 1 < len(tokens) else ""
    return tokens[i] in ("A", "I") and following.islower() and following not in _LINKS


def predicted_letter(prediction: str, choices: list[str] | None = None) -> str | None:
    """The option letter a free-form prediction picks, or None if it cannot be told.

    Tried in order, first hit wins (after dropping a leading "The answer is" / "Answer:"):
    1. with ``choices``, the option text exactly (normalised), so "A cat" with choices
       ["dog", "cat"] is "B", not the article "A";
    2. a bare letter ("B", "(b)", "B."), or a letter opening the text ("B. cat", "(B) cat");
    3. the last "answer is B" / "Answer: (B)" / "option B" phrase anywhere;
    4. the one option letter standing alone as a token, like VLMEvalKit's ``can_infer_option``
       (an "A" or "I" before a lowercase word other than is/or/and is read as a word);
    5. with ``choices``, the one option whose text appears as whole words, like VLMEvalKit's
       ``can_infer_text`` (``vlmeval/utils/matching_util.py``).
    """
    letters = _option_letters(choices)
    text = prediction.strip()
    body = _ANSWER_PREFIX.sub("", text).strip()
    if choices and (letter := _letter_from_text(body, choices) or _letter_from_text(text, choices)):
        return letter
    m = _LETTER_ONLY.fullmatch(body) or _LETTER_LEAD.match(body)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    phrases = [m.group(1) for m in _ANSWER_PHRASE.finditer(text) if m.group(1) in letters]
    if phrases:
        return phrases[-1]
    tokens = [t for t in _TOKEN_SPLIT.split(text) if t]
    standalone = {t for i, t in enumerate(tokens) if t in letters and not _is_word(tokens, i)}
    if len(standalone) == 1:
        return standalone.pop()
    if choices:
        padded = f" {_normalise_text(text)} "
        options = [_normalise_text(c) for c in choices]
        hits = [i for i, option in enumerate(options) if option and f" {option} " in padded]
        if len(hits) == 1:
            return letters[hits[0]]
    return None


def _answer_letter(answer: str, choices: list[str] | None) -> str:
    if m := _LETTER_ONLY.fullmatch(answer.strip()):
        return m.group(1).upper()
    if choices and (letter := _letter_from_text(answer, choices)):
        return letter
    raise ValueError(
        f"multiple-choice answer {answer!r} is not an option letter; give 'B' or '(B)'"
        + ("" if choices else ", or pass choices to match option text")
    )


def multiple_choice(prediction: str, answers: list[str], choices: list[str] | None) -> float:
    """1.0 if the letter ``predicted_letter`` reads matches a ground-truth letter, else 0.0.

    Ground-truth answers are letters ("B", "(B)"); an option text is accepted given ``choices``.
    """
    gold = {_answer_letter(a, choices) for a in answers}
    return float(predicted_letter(prediction, choices) in gold)


# --- exact -------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")


def _as_number(text: str) -> float | None:
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    return float(text) if _NUMBER.fullmatch(text) else None


def _exact_key(text: str) -> float | str:
    """A number if the text reads as one, else the normalised string."""
    text = text.strip().lower()
    if (number := _as_number(text)) is not None:
        return number
    text = text.strip(string.punctuation + string.whitespace)
    text = " ".join(w for w in text.split() if w not in _ARTICLES)
    number = _as_number(text)
    return text if number is None else number


def exact_match(prediction: str, answers: list[str]) -> float:
    """Normalised exact match, max over answers.

    Case, surrounding whitespace and punctuation, and the articles a/an/the are ignored;
    numbers compare as numbers ("3.0" == "3", "1,000" == "1000"; "$5" and "5%" read as 5, the
    sign being surrounding punctuation).
    """
    pred = _exact_key(prediction)
    for answer in answers:
        gold = _exact_key(answer)
        if isinstance(pred, float) and isinstance(gold, float):
            if math.isclose(pred, gold, rel_tol=1e-9, abs_tol=1e-12):
                return 1.0
        elif pred == gold:
            return 1.0
    return 0.0
