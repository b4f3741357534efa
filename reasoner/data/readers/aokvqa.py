"""A-OKVQA (Schwenk et al. 2022), direct-answer and multiple-choice forms.

Layout read (the official release, ``aokvqa_v1p0.zip`` plus COCO 2017 images, as the
``allenai/aokvqa`` README and its ``load_aokvqa`` / ``get_coco_path`` describe)::

    <root>/aokvqa_v1p0_{train,val,test}.json         a JSON list of questions
                                                     (or <root>/aokvqa/aokvqa_v1p0_*.json)
    <root>/{train,val,test}2017/<image_id:012d>.jpg   COCO 2017 images, or under <root>/coco/
                                                     (the README's datasets/{aokvqa,coco}),
                                                     or under the ``coco_root`` option

A question has ``question_id``, ``image_id``, ``question``, ``choices``, ``correct_choice_idx``,
``direct_answers`` (10 annotators), ``difficult_direct_answer`` and ``rationales`` (3); the
test split carries no answers, so its records are rejected ("no answer").

Rows: ``form="da"`` (source ``aokvqa``): the 10 direct answers, metric ``aokvqa`` (the official
direct-answer accuracy, ``min(1, matches / 3)``, see ``reasoner.answers.aokvqa_accuracy``), no
choices. Questions marked ``difficult_direct_answer`` are kept, though the official
direct-answer score leaves them out.
``form="mc"`` (source ``aokvqa-mc``): the choices and the letter of ``correct_choice_idx``,
metric ``mc``. Both carry the rationales joined one per line. Ids are
``aokvqa-<split>-<question_id>`` / ``aokvqa-mc-<split>-<question_id>``. Splits: train, val and
test map to themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.fs as pafs

from reasoner.data.readers._common import (
    DatasetRoot, Rejected, check_split, complete, example, index_letter,
)

SPLITS = {"train": "train", "val": "val", "test": "test"}
FORMS = {"da": "aokvqa", "mc": "aokvqa-mc"}


def read_aokvqa(root: str, split: str, *, filesystem: pafs.FileSystem | None = None,
                form: str = "da", coco_root: str | None = None,
                verify_images: bool = False) -> Iterator[dict | Rejected]:
    """A-OKVQA rows of ``split`` in ``form`` "da" (direct answer) or "mc" (multiple choice).

    ``coco_root`` is the COCO directory holding ``{split}2017/`` when it is not the release
    root or its ``coco/`` subdirectory (a path inside the same filesystem).
    """
    if form not in FORMS:
        raise ValueError(f"A-OKVQA form must be one of {sorted(FORMS)}, got {form!r}")
    source, schema_split = FORMS[form], check_split("aokvqa", split, SPLITS)
    ds = DatasetRoot(root, filesystem, dataset="aokvqa", verify_images=verify_images)
    questions = ds.read_list(ds.find_file(
        [f"aokvqa_v1p0_{split}.json", f"aokvqa/aokvqa_v1p0_{split}.json"],
        f"A-OKVQA's aokvqa_v1p0_{split}.json (from aokvqa_v1p0.zip)"))
    coco_dirs = [ds.resolve(coco_root)] if coco_root else [ds.root, ds.path("coco")]
    image_dirs = [f"{d}/{split}2017" for d in coco_dirs]
    for q in questions:
        choices = q.get("choices") or []
        if form == "mc":
            index = q.get("correct_choice_idx")
            answers = [] if index is None else [index_letter(index, choices)]
        else:
            answers = q.get("direct_answers") or []
        row = example(source, f"{source}-{split}-{q.get('question_id')}", schema_split,
                      q.get("question"), answers, "mc" if form == "mc" else "aokvqa",
                      choices=choices if form == "mc" else None,
                      rationale="\n".join(r.strip() for r in q.get("rationales") or []))
        image_id = q.get("image_id")
        name = f"{image_id:012d}.jpg" if isinstance(image_id, int) else f"{image_id}.jpg"
        yield complete(row, ds, [f"{d}/{name}" for d in image_dirs])
