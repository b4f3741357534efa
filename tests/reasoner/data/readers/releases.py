"""Tiny releases of the real datasets, written in each one's native layout for the reader tests.

Each ``write_<dataset>(root)`` writes a handful of records (at least one of them unusable) and
tiny images into ``root`` exactly where the release puts them; the tests read them back and
compare with rows written out by hand. ``RELEASES`` maps each dataset name to its builder and a
split holding usable rows, for the tests that run over every reader.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image


def _encoded(fmt: str, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buffer, format=fmt)
    return buffer.getvalue()


PNG = _encoded("PNG", (200, 30, 30))
JPEG = _encoded("JPEG", (30, 200, 30))
PNG2 = _encoded("PNG", (30, 30, 200))


def write(path: Path, content: bytes | str | object) -> None:
    """Write bytes, text, or anything else as JSON, creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_aokvqa(root: Path) -> None:
    write(root / "aokvqa_v1p0_val.json", [
        {"split": "val", "image_id": 1, "question_id": "22jbM6gDxdaMaunuzgrsBB",
         "question": "What is the man holding?", "choices": ["bat", "ball", "cup", "hat"],
         "correct_choice_idx": 0, "direct_answers": ["bat"] * 7 + ["stick"] * 3,
         "difficult_direct_answer": False,
         "rationales": ["He swings it at the ball.", " It is a baseball bat. "]},
        {"split": "val", "image_id": 2, "question_id": "q2", "question": "Which season?",
         "choices": ["winter", "summer"], "correct_choice_idx": 5,
         "direct_answers": ["winter"] * 10, "difficult_direct_answer": True,
         "rationales": ["There is snow."]},
        {"split": "val", "image_id": 3, "question_id": "q3", "question": "Why?",
         "choices": ["a", "b"], "correct_choice_idx": 1, "direct_answers": ["b"] * 10,
         "difficult_direct_answer": False, "rationales": []},
    ])
    write(root / "aokvqa_v1p0_test.json", [
        {"split": "test", "image_id": 9, "question_id": "t1", "question": "What?",
         "choices": ["x", "y"], "difficult_direct_answer": False},
    ])
    write(root / "val2017" / "000000000001.jpg", JPEG)
    write(root / "val2017" / "000000000002.jpg", JPEG)
    write(root / "test2017" / "000000000009.jpg", JPEG)


def write_chartqa(root: Path) -> None:
    base = root / "ChartQA Dataset" / "test"
    write(base / "test_human.json", [
        {"imgname": "41699051005347.png", "query": "How many food items are shown?",
         "label": "14"},
        {"imgname": "8127.png", "query": "What's the value of the lowest bar?", "label": 23},
        {"imgname": "8127.png", "query": "Is it?", "label": None},
    ])
    write(base / "test_augmented.json", [
        {"imgname": "missing.png", "query": "What is the peak?", "label": "2014"},
        {"imgname": "8127.png", "query": "Which is largest?", "label": ["UK", "U.K."]},
    ])
    write(base / "png" / "41699051005347.png", PNG)
    write(base / "png" / "8127.png", PNG2)


def docvqa_record(qid: int, question: str, image: str, answers: list[str] | None) -> dict:
    record = {"questionId": qid, "question": question, "question_types": ["form"],
              "image": image, "docId": 14465, "ucsf_document_id": "txpp0227",
              "ucsf_document_page_no": "10", "data_split": "val"}
    if answers is not None:
        record["answers"] = answers
    return record


def write_docvqa(root: Path) -> None:
    write(root / "spdocvqa_qas" / "val_v1.0_withQT.json", {
        "dataset_name": "docvqa", "dataset_split": "val", "dataset_version": "1.0", "data": [
            docvqa_record(49153, "What is the date?", "documents/pybv0228_81.png",
                          ["May 1, 1970", "1 May 1970"]),
            docvqa_record(24581, "Who signed?", "documents/nkbl0226_1.png", ["J. Smith"]),
            docvqa_record(57349, "What is the total?", "documents/pybv0228_81.png", []),
        ]})
    write(root / "spdocvqa_images" / "pybv0228_81.png", PNG)


def write_infovqa(root: Path) -> None:
    write(root / "infographicsvqa_qas" / "infographicsVQA_val_v1.0_withQT.json", {
        "dataset_name": "infographicVQA", "dataset_split": "val", "data": [
            {"questionId": 65718, "question": "What percentage of people are vaccinated?",
             "image_local_name": "37313.jpeg", "answers": ["24%", "24"],
             "ocr_output_file": "37313.json"},
            {"questionId": 65719, "question": "Which country?",
             "image_local_name": "37314.jpeg", "answers": ["Chad"],
             "ocr_output_file": "37314.json"},
        ]})
    write(root / "infographicsvqa_images" / "37313.jpeg", JPEG)
    write(root / "infographicsvqa_images" / "37314.jpeg", b"")  # empty file


def write_textvqa(root: Path) -> None:
    answers = ["nokia"] * 8 + ["nokia phone", "toshiba"]
    write(root / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "dataset_type": "val",
                                            "dataset_version": "0.5.1", "data": [
        {"question": "what is the brand of this camera?", "image_id": "003a8ae2ef43b901",
         "question_id": 34602, "answers": answers, "set_name": "val"},
        {"question": "what does the sign say?", "image_id": "00685bc495504d61",
         "question_id": 34603, "answers": ["stop"] * 10, "set_name": "val"},
    ]})
    write(root / "train_images" / "003a8ae2ef43b901.jpg", JPEG)
    write(root / "train_images" / "00685bc495504d61.jpg", b"not an image at all")


def sqa_problem(question: str, choices: list[str], answer: int, image: str | None,
                split: str, hint: str = "", solution: str = "") -> dict:
    return {"question": question, "choices": choices, "answer": answer, "hint": hint,
            "image": image, "task": "closed choice", "grade": "grade4",
            "subject": "natural science", "topic": "geography", "category": "Geography",
            "skill": "Read a map", "lecture": "Maps show places.", "solution": solution,
            "split": split}


def write_scienceqa(root: Path) -> None:
    write(root / "problems.json", {
        "1": sqa_problem("Which state is highlighted?", ["Ohio", "Utah", "Iowa"], 1,
                         "image.png", "train", hint="The map shows the USA.",
                         solution="This state is Utah."),
        "2": sqa_problem("Which word is a noun?", ["run", "cat"], 1, None, "train"),
        "3": sqa_problem("Which is a magnet?", ["A", "B"], 2, "image.png", "train"),
        "4": sqa_problem("What is the capital of Peru?", ["Lima", "Quito"], 0,
                         "image.png", "val", solution="  "),
    })
    write(root / "pid_splits.json", {"train": ["1", "2", "3"], "val": ["4"], "test": [],
                                     "minival": ["4"]})
    write(root / "images" / "train" / "1" / "image.png", PNG)
    write(root / "images" / "train" / "3" / "image.png", PNG)
    write(root / "images" / "val" / "4" / "image.png", PNG2)


def ai2d_question(qid: str, answers: list[str], correct: int | str, abc: bool) -> dict:
    return {"abcLabel": abc, "answerTexts": answers, "correctAnswer": correct, "questionId": qid}


def write_ai2d(root: Path) -> None:
    write(root / "questions" / "0.png.json", {"imageName": "0.png", "questions": {
        "Which stage comes after the egg?": ai2d_question("0.png-0", ["larva", "adult"], 0, False),
        "What is A in the diagram?": ai2d_question("0.png-1", ["ears", "nose", "face"], "2", True),
    }})
    write(root / "questions" / "10.png.json", {"imageName": "10.png", "questions": {
        "What does the diagram show?": ai2d_question("10.png-0", ["moon", "sun"], 1, False),
    }})
    write(root / "questions" / "2.png.json", {"imageName": "2.png", "questions": {
        "What is B in the diagram?": ai2d_question("2.png-0", ["leaf", "root"], 0, True),
        "Which part absorbs water?": ai2d_question("2.png-1", ["leaf", "root"], 3, False),
    }})
    write(root / "ai2d_test_ids.csv", "10\n")
    write(root / "images" / "0.png", PNG)
    write(root / "abc_images" / "0.png", PNG2)
    write(root / "images" / "10.png", PNG)
    write(root / "images" / "2.png", PNG)


def write_mathvision(root: Path) -> None:
    write(root / "data" / "testmini.jsonl", jsonl([
        {"id": "6", "question": "Which picture shows the kittens?\n<image1>",
         "options": ["A", "B", "C", "D", "E"], "answer": "D", "solution": None, "level": 3,
         "subject": "logic", "image": "images/6.jpg"},
        {"id": "4", "question": "How many different digits can you find?\n<image1>",
         "options": [], "answer": "6", "solution": "Count them: 6.", "level": 1,
         "subject": "counting", "image": "images/4.jpg"},
        {"id": "39", "question": "Which colour is the cube?\n<image1>",
         "options": ["red", "blue"], "answer": "F", "solution": None, "level": 3,
         "subject": "logic", "image": "images/39.jpg"},
        {"id": "7", "question": "How many bricks are missing?\n<image1>", "options": [],
         "answer": "6", "solution": None, "level": 1, "subject": "counting",
         "image": "images/7.jpg"},
    ]))
    for name in ("6", "4", "39"):
        write(root / "images" / f"{name}.jpg", JPEG)


def mathvista_problem(pid: str, question: str, choices: list[str] | None, answer: str | None,
                      question_type: str, answer_type: str) -> dict:
    problem = {"question": question, "image": f"images/{pid}.jpg", "choices": choices,
               "unit": None, "precision": 1 if answer_type == "float" else None,
               "question_type": question_type, "answer_type": answer_type, "pid": pid,
               "metadata": {"split": "testmini", "source": "SciBench"}}
    if answer is not None:
        problem["answer"] = answer
    return problem


def write_mathvista(root: Path) -> None:
    write(root / "data" / "testmini.json", {
        "1": mathvista_problem("1", "By what distance is the spring compressed?", None, "1.2",
                               "free_form", "float"),
        "3": mathvista_problem("3", "Find m angle BOC.", ["135°", "140°", "145°", "150°"],
                               "145°", "multi_choice", "text"),
        "5": mathvista_problem("5", "Find m angle H.", ["97", "102"], "107", "multi_choice",
                               "text"),
    })
    write(root / "data" / "test.json", {
        "1001": mathvista_problem("1001", "How many?", None, None, "free_form", "integer"),
    })
    for pid in ("1", "3", "5", "1001"):
        write(root / "data" / "images" / f"{pid}.jpg", JPEG)


GLLAVA_INSTRUCTION = ("First perform reasoning, then finally select the question from the "
                      "choices in the following format: Answer: xxx.")


def write_gllava(root: Path) -> None:
    write(root / "qa_tuning.json", [
        {"image": "geoqa_plus/8086.png", "conversations": [
            {"from": "human", "value": f"<image>\n{GLLAVA_INSTRUCTION}\nQuestion: If angle 1 "
                                       "measures 32°, what is angle 2?\nChoices:\nA: 32°\n"
                                       "B: 68°\nC: 58°\nD: 34°"},
            {"from": "gpt", "value": "Since a || b, angle 2 = 180° - 90° - 32° = 58°. "
                                     "Therefore, the answer is: C.\nAnswer:C"}]},
        {"image": "geo3k/train/12/img_diagram.png", "conversations": [
            {"from": "human", "value": "<image>\nQuestion: Find x."},
            {"from": "gpt", "value": "By Pythagoras x = 5.\nAnswer: 5"}]},
        {"image": "geoqa_plus/9.png", "conversations": [
            {"from": "human", "value": f"<image>\n{GLLAVA_INSTRUCTION}\nQuestion: What is "
                                       "angle C?\nChoices:\nA: 30°\nB: 40°"},
            {"from": "gpt", "value": "The angles sum to 180°."}]},
    ])
    write(root / "test_questions.jsonl", jsonl([
        {"question_id": 0, "image": "test/0.png", "text": f"\n{GLLAVA_INSTRUCTION}\n"
         "Question:In triangle ABC, angle A = 80.0, then angle CED is ()\nChoices:\nA:40°\n"
         "B:60°\nC:120°\nD:140°"},
        {"question_id": 1, "image": "test/1.png", "text": f"\n{GLLAVA_INSTRUCTION}\n"
         "Question:Then angle 2 is ()\nChoices:\nA:50°\nB:60°"},
    ]))
    write(root / "test_answers.jsonl", jsonl([{"question_id": 0, "text": "D"},
                                              {"question_id": 1, "text": "C"}]))
    write(root / "images" / "geoqa_plus" / "8086.png", PNG)
    write(root / "images" / "geo3k" / "train" / "12" / "img_diagram.png", PNG2)
    write(root / "images" / "geoqa_plus" / "9.png", PNG)
    write(root / "images" / "test" / "0.png", PNG)
    write(root / "images" / "test" / "1.png", PNG)


# dataset -> (builder, a split with usable rows, the number of rows it gives)
RELEASES: dict[str, tuple[Callable[[Path], None], str, int]] = {
    "aokvqa": (write_aokvqa, "val", 2),
    "aokvqa-mc": (write_aokvqa, "val", 1),
    "chartqa": (write_chartqa, "test", 3),
    "docvqa": (write_docvqa, "val", 1),
    "infovqa": (write_infovqa, "val", 1),
    "textvqa": (write_textvqa, "val", 1),
    "scienceqa": (write_scienceqa, "train", 1),
    "ai2d": (write_ai2d, "train", 2),
    "mathvision": (write_mathvision, "testmini", 2),
    "gllava": (write_gllava, "train", 2),
    "mathvista": (write_mathvista, "testmini", 2),
}


def read(name: str, root: Path | str, split: str, **options) -> tuple[list[dict], list]:
    """(rows, rejected) of ``read_dataset(name, root, split, **options)``."""
    from reasoner.data.readers import Rejected, read_dataset

    items = list(read_dataset(name, str(root), split, **options))
    return ([i for i in items if not isinstance(i, Rejected)],
            [i for i in items if isinstance(i, Rejected)])


def reasons(rejected: list) -> dict[str, str]:
    """id -> reason of rejected records."""
    return {r.row["id"]: r.reason for r in rejected}



def row(source: str, id_: str, split: str, image: bytes, question: str, answers: list[str],
        metric: str, choices: list[str] | None = None, rationale: str | None = None) -> dict:
    """An expected examples row, written out field by field."""
    return {"id": id_, "source": source, "split": split, "image": image, "question": question,
            "choices": choices, "answers": answers, "metric": metric, "rationale": rationale}
