"""What every dataset reader shares: the release directory on a filesystem, rows, rejections.

A reader walks a dataset's annotation files in their native release layout and yields, per
record, either an ``examples`` row (``reasoner.schema.EXAMPLES``) or a ``Rejected`` (the row as
far as it was built and the reason it cannot be used). Nothing is dropped silently.

Files are read only through a ``pyarrow.fs.FileSystem`` (``DatasetRoot``), so a release can sit
on local disk or in a bucket. Images are passed through as their raw bytes, never decoded and
re-encoded; by default they are checked only for existence, non-emptiness and the signature
of an accepted format (PNG, JPEG, GIF, WEBP, BMP), and ``verify_images=True`` adds a full
decode with ``reasoner.data.images.decode_image``.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from reasoner.data.images import ImageError, decode_image
from reasoner.prompts import option_letters

ReaderFn = Callable[..., Iterator["dict | Rejected"]]

# Reasons a record is rejected (each Rejected.reason starts with one of these).
NO_IMAGE = "no image"
MISSING_IMAGE = "missing image"
BAD_IMAGE = "bad image"
NO_QUESTION = "no question"
NO_ANSWER = "no answer"
BAD_CHOICES = "bad choices"
BAD_ANSWER = "bad answer"

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"BM", "BMP"),
)


@dataclass(frozen=True)
class Rejected:
    """A record a reader cannot turn into an example: the row as far as it got, and why.

    ``reason`` starts with one of the module's reason kinds (``"missing image"``, ``"no answer"``,
    ...) followed by the details; ``row`` holds at least ``id``, ``source`` and ``split``.
    """

    row: dict
    reason: str


class RecordError(ValueError):
    """One record's image cannot be used; ``complete`` turns it into a ``Rejected``."""


def check_split(dataset: str, split: str, splits: dict[str, str]) -> str:
    """The schema split ("train" | "val" | "test") of the dataset's own split name ``split``."""
    if split not in splits:
        raise ValueError(f"{dataset} has no split {split!r}; its splits are "
                         f"{', '.join(sorted(splits))} (the dataset's own split names)")
    return splits[split]


def image_format(data: bytes) -> str | None:
    """The accepted format whose signature ``data`` starts with, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


class DatasetRoot:
    """A dataset's release directory: a local path or a URI, read through ``pyarrow.fs``.

    Args:
        root: a local path, or a URI (``s3://bucket/data/chartqa``, ``gs://...``) resolved with
            ``pyarrow.fs.FileSystem.from_uri``; with ``filesystem`` given, the path inside it
            (a URI's scheme is then dropped: ``s3://bucket/x`` means ``bucket/x``).
        filesystem: the filesystem to read from, for stores a URI cannot configure.
        dataset: the dataset's name, for error messages.
        verify_images: fully decode each image (slower) instead of checking its signature.
    """

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None, *,
                 dataset: str, verify_images: bool = False) -> None:
        if not isinstance(root, str) or not root.strip():
            raise ValueError(f"{dataset}: root must be a non-empty path or URI, got {root!r}")
        self.dataset, self.verify_images = dataset, verify_images
        if filesystem is None and "://" in root:
            try:
                self.fs, path = pafs.FileSystem.from_uri(root)
            except (pa.ArrowInvalid, OSError) as e:
                raise ValueError(f"{dataset}: root {root!r} is not a usable URI: {e}") from e
            self.root = path.rstrip("/") or "/"
        else:
            self.fs = filesystem if filesystem is not None else pafs.LocalFileSystem()
            self.root = self.resolve(root)
        if not self.is_dir(self.root):
            where = f" ({self.root!r} on {self.fs.type_name})" if self.root != root else ""
            raise FileNotFoundError(f"{dataset}: dataset root {root!r}{where} does not exist or "
                                    "is not a directory; give the directory of the release")
        self._hint = 0  # index of the image candidate that worked last

    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` below the root."""
        return posixpath.join(self.root, *parts)

    def resolve(self, other: str) -> str:
        """Another location (a path, or a URI whose scheme is dropped) in the same filesystem."""
        path = other.split("://", 1)[-1]
        if isinstance(self.fs, pafs.LocalFileSystem):
            path = os.path.abspath(os.path.expanduser(path))
        return path.rstrip("/") or "/"

    def _type(self, path: str) -> pafs.FileType:
        return self.fs.get_file_info(path).type

    def is_file(self, path: str) -> bool:
        return self._type(path) == pafs.FileType.File

    def is_dir(self, path: str) -> bool:
        return self._type(path) == pafs.FileType.Directory

    def _first(self, candidates: Sequence[str], expects: str, test: Callable[[str], bool],
               kind: str) -> int:
        for index, candidate in enumerate(candidates):
            if test(self.path(candidate).rstrip("/")):
                return index
        raise FileNotFoundError(
            f"{self.dataset}: no {kind} {' or '.join(repr(c) for c in candidates)} under "
            f"{self.root!r}; the layout read expects {expects}")

    def find_file(self, candidates: Sequence[str], expects: str) -> str:
        """The full path of the first of ``candidates`` (paths below the root) that is a file.

        Raises:
            FileNotFoundError: naming every candidate and what the layout expects.
        """
        return self.path(candidates[self._first(candidates, expects, self.is_file, "file")])

    def find_dir(self, candidates: Sequence[str], expects: str) -> str:
        """The first of ``candidates`` (paths below the root, "" for the root itself) that is
        a directory, returned as given (relative), to build further paths with ``path``."""
        return candidates[self._first(candidates, expects, self.is_dir, "directory")]

    def find_base(self, dirs: Sequence[str], marker: str, expects: str) -> str:
        """The first of ``dirs`` (below the root, "" for the root) that holds the file
        ``marker``, returned as given (relative)."""
        markers = [posixpath.join(d, marker) for d in dirs]
        return dirs[self._first(markers, expects, self.is_file, "file")]

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def read_json(self, path: str) -> Any:
        """A JSON file's content; ``ValueError`` naming the file if it is not valid JSON."""
        try:
            return json.loads(self.read_bytes(path))
        except ValueError as e:
            raise ValueError(f"{self.dataset}: {path!r} is not valid JSON: {e}") from e

    def read_list(self, path: str, key: str | None = None) -> list:
        """A JSON file's list of records: the whole file, or its ``key`` entry.

        Raises:
            ValueError: the file (or its ``key`` entry) is not a JSON list.
        """
        content = self.read_json(path)
        if key is not None:
            content = content.get(key) if isinstance(content, dict) else None
        if not isinstance(content, list):
            what = f"an object with a {key!r} entry holding a list" if key else "a JSON list"
            raise ValueError(f"{self.dataset}: {path!r} is not {what} of records, as the "
                             "release's annotation files are")
        return content

    def read_jsonl(self, path: str) -> list[dict]:
        """A JSON Lines file's records (blank lines skipped)."""
        records = []
        for number, line in enumerate(self.read_bytes(path).decode("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{self.dataset}: line {number} of {path!r} is not valid "
                                     f"JSON: {e}") from e
        return records

    def list_files(self, directory: str, suffix: str) -> list[str]:
        """The paths of the files directly in ``directory`` whose names end with ``suffix``."""
        infos = self.fs.get_file_info(pafs.FileSelector(directory, recursive=False))
        return [i.path for i in infos if i.type == pafs.FileType.File
                and i.base_name.endswith(suffix)]

    def image(self, candidates: Sequence[str]) -> bytes:
        """The raw bytes of the first of ``candidates`` (full paths) that exists, checked.

        The candidate that worked last is tried first, so a layout with alternatives costs
        one read per image once the right one is found.

        Raises:
            RecordError: no candidate exists, or the file is unreadable, empty, of another
                format or (with ``verify_images``) does not decode.
        """
        candidates = list(dict.fromkeys(candidates))
        order = list(range(len(candidates)))
        if self._hint < len(order):
            order.insert(0, order.pop(self._hint))
        for index in order:
            path = candidates[index]
            try:
                data = self.read_bytes(path)
            except OSError as e:
                if isinstance(e, FileNotFoundError) or self._type(path) == pafs.FileType.NotFound:
                    continue
                raise RecordError(f"{BAD_IMAGE}: cannot read {path!r}: {e}") from e
            self._hint = index
            return self._checked(data, path)
        tried = ", ".join(repr(c) for c in candidates)
        raise RecordError(f"{MISSING_IMAGE}: no file {tried}" if len(candidates) == 1
                          else f"{MISSING_IMAGE}: none of {tried} exists")

    def _checked(self, data: bytes, path: str) -> bytes:
        if not data:
            raise RecordError(f"{BAD_IMAGE}: {path!r} is empty")
        if image_format(data) is None:
            raise RecordError(f"{BAD_IMAGE}: {path!r} is not a PNG, JPEG, GIF, WEBP or BMP "
                              f"image (starts with {data[:8]!r})")
        if self.verify_images:
            try:
                decode_image(data).close()
            except ImageError as e:
                raise RecordError(f"{BAD_IMAGE}: {path!r}: {e}") from e
        return data


def example(source: str, id_: str, split: str, question: Any, answers: Sequence[Any],
            metric: str, *, choices: Sequence[Any] | None = None,
            rationale: str | None = None) -> dict:
    """An examples row without its image (``image`` is None until ``complete`` loads it).

    Answers and choices become strings (numbers as written, e.g. 14 -> "14"); a rationale that
    is empty or only whitespace becomes None.
    """
    return {
        "id": id_, "source": source, "split": split, "image": None,
        "question": question if isinstance(question, str) else None,
        "choices": None if choices is None else [_text(c) for c in choices],
        "answers": [_text(a) for a in answers if a is not None],
        "metric": metric,
        "rationale": (rationale.strip() or None) if isinstance(rationale, str) else None,
    }


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def row_problem(row: dict) -> str | None:
    """Why ``row``'s question, choices or answers cannot be used, or None.

    A question must be non-empty; at least one answer non-empty; choices (if any) non-empty
    single lines (the prompt puts one per line); an ``mc`` answer an option letter in range.
    """
    if not (row["question"] or "").strip():
        return f"{NO_QUESTION}: the question is empty or missing"
    if not any(a.strip() for a in row["answers"]):
        return f"{NO_ANSWER}: the record has no (non-empty) answer"
    choices = row["choices"]
    if choices is not None:
        if not choices:
            return f"{BAD_CHOICES}: the option list is empty"
        for letter, choice in zip(option_letters(min(len(choices), 26)), choices):
            if not choice.strip() or len(choice.strip().splitlines()) != 1:
                return f"{BAD_CHOICES}: option {letter} {choice!r} is not one non-empty line"
        if len(choices) > 26:
            return f"{BAD_CHOICES}: {len(choices)} options, more than the 26 letters"
    if row["metric"] == "mc":
        letters = option_letters(len(choices or []))
        wrong = [a for a in row["answers"] if a not in letters]
        if wrong:
            return (f"{BAD_ANSWER}: {wrong[0]!r} is not an option letter of the "
                    f"{len(letters)} options ({', '.join(letters) or 'none'})")
    return None


def index_letter(index: Any, choices: Sequence[Any]) -> str:
    """The option letter of a 0-based answer index (an int or a numeric str).

    An index that is not an integer in range gives ``"index <index>"``, which ``row_problem``
    then rejects as a bad answer naming it.
    """
    try:
        value = None if isinstance(index, (bool, float)) else int(index)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0 <= value < min(len(choices), 26):
        return f"index {index!r}"
    return option_letters(min(len(choices), 26))[value]


def text_letter(answer: str, choices: Sequence[str]) -> str:
    """The letter of the first option equal to ``answer`` (stripped), or ``answer`` itself."""
    stripped = [c.strip() for c in choices[:26]]
    if answer.strip() in stripped:
        return option_letters(len(stripped))[stripped.index(answer.strip())]
    return answer


def complete(row: dict, root: DatasetRoot, image_paths: Sequence[str]) -> dict | Rejected:
    """``row`` with its image bytes, or a ``Rejected`` saying what is wrong with it.

    The row's content is checked first (``row_problem``), so a record without an answer is
    rejected without reading its image.
    """
    problem = row_problem(row)
    if problem is not None:
        return Rejected(row, problem)
    try:
        row["image"] = root.image(image_paths)
    except RecordError as e:
        return Rejected(row, str(e))
    return row
