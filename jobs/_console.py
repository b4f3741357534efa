"""A terminal a person can follow: our own lines on the console, everything else in a log file.

Ray Data's progress bars, vLLM's engine logs and the worker logs Ray forwards (``log_to_driver``)
are written by other libraries and processes straight to file descriptors 1 and 2, so filtering
``logging`` is not enough: in quiet mode :class:`Console` points fds 1 and 2 at the run's log file
and keeps a private duplicate of the terminal. The terminal gets :meth:`Console.line`, the records
of the ``jobs.console`` logger, ``jobs``/``reasoner`` warnings and errors, and progress lines.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO, Any

CONSOLE_LOGGER = "jobs.console"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NON_TTY_EVERY, NON_TTY_STEP = 30.0, 0.1  # off a TTY: a progress line each 30 s or 10% of the total


def format_duration(seconds: float) -> str:
    """``8.2 s`` under a minute, ``3m05s`` under an hour, ``1h02m`` above."""
    seconds = max(0.0, seconds)  # a clock step backwards is no reason to print "-0.1 s"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    if round(seconds) < 3600:
        return "{}m{:02d}s".format(*divmod(round(seconds), 60))
    return "{}h{:02d}m".format(*divmod(round(seconds / 60), 60))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if _is_number(value):
        return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns padded, a rule under the header; numbers right-aligned with
    thousands separators (floats with one decimal), None as ``-``. A column of numbers (or None)
    has its header right-aligned too."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row needs {len(header)} cells (the header's), got rows of "
                         f"{sorted({len(row) for row in rows})} cells")
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(header)]
    numeric = [bool(rows) and all(row[i] is None or _is_number(row[i]) for row in rows)
               for i in range(len(header))]

    def join(texts: Sequence[str], right: Sequence[bool]) -> str:
        return "  ".join(t.rjust(w) if r else t.ljust(w) for t, w, r in zip(texts, widths, right)).rstrip()

    lines = [join(header, numeric), "  ".join("-" * w for w in widths)]
    lines += [join(c, [v is None or _is_number(v) for v in row]) for c, row in zip(cells, rows)]
    return "\n".join(lines)


class _ConsoleHandler(logging.Handler):
    """The records meant for the terminal, written through the console (which clears a progress line)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(logging.Formatter(FILE_FORMAT))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.console.quiet:
            return True
        if record.name == CONSOLE_LOGGER or record.name.startswith(CONSOLE_LOGGER + "."):
            return record.levelno >= logging.INFO
        return record.levelno >= logging.WARNING and record.name.split(".", 1)[0] in ("jobs", "reasoner")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name == CONSOLE_LOGGER:
                text = record.getMessage()
            elif not self.console.quiet:
                text = self.format(record)
            else:  # one line; the traceback is in the file
                text = f"{record.levelname} {record.name}: {record.getMessage()}"
                text += f" (traceback in {self.console.log_path})" if record.exc_info else ""
            self.console.write(text + "\n")
        except Exception:
            self.handleError(record)


_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EROFS: "the filesystem is read-only"}


def explain(exc: BaseException) -> str | None:
    """One line for a failure that is the machine's, not the code's (a full disk, a read-only or
    forbidden path), found anywhere in ``exc``'s chain (Ray wraps a worker's error in its own), with
    what to do; None for anything else."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_ERRORS:
            where = f" writing {e.filename}" if e.filename else ""
            fix = ("free space (or point run_dir / cache_dir elsewhere)" if e.errno in (errno.ENOSPC, errno.EDQUOT)
                   else "fix the permissions or choose another run_dir")
            return f"{_DISK_ERRORS[e.errno]}{where}: {fix}, then run the job again: it resumes where it stopped"
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None) if isinstance(getattr(e, "cause", None),
                                                                                     BaseException) else None]
    return None


class Console:
    """Where a job's output goes.

    quiet=True: the process's stdout/stderr file descriptors (1 and 2) are redirected (``os.dup2``)
    to the log file, so everything any library, child process or Ray-forwarded worker prints lands
    there; the console keeps a private duplicate of the original stderr for our own lines.
    quiet=False: nothing is redirected (the log file still gets a copy of the Python log records).
    ``stream``: where our lines go (default: a duplicate of fd 2 taken before redirecting). Without
    real fds (``sys.stderr.fileno()`` fails, as under pytest's sys capture) nothing is redirected.
    """

    def __init__(self, log_path: str, *, quiet: bool = True, stream: IO[str] | None = None,
                 debug: bool = False) -> None:
        self.log_path, self.quiet, self.stream, self.debug = str(log_path), quiet, stream, debug
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        self.redirected, self._owns_stream, self._partial = False, False, False  # _partial: a TTY line without "\n"
        self.tty, self.width = False, 80
        self._lock = threading.RLock()
        self._file: logging.FileHandler | None = None
        self._saved_fds: list[int] = []
        self._saved_logging: tuple[list[logging.Handler], int, int] | None = None
        self._line_buffering: bool | None = None

    def __enter__(self) -> Console:
        self._file = logging.FileHandler(self.log_path, encoding="utf-8")
        self._file.setFormatter(logging.Formatter(FILE_FORMAT))
        try:
            sys.stderr.fileno()
            redirect = self.quiet
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last
            redirect = False
        if self.stream is None:
            self._owns_stream = redirect
            self.stream = open(os.dup(2), "w", encoding="utf-8", errors="replace") if redirect else sys.stderr
        with contextlib.suppress(AttributeError, OSError, ValueError):  # not a file, or not a terminal
            self.tty = self.stream.isatty()
            self.width = os.get_terminal_size(self.stream.fileno()).columns
        if redirect:
            sys.stdout.flush()
            sys.stderr.flush()
            # O_APPEND, as the FileHandler opens it: both write at the end, never over each other.
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._saved_fds = [os.dup(1), os.dup(2)]
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            self.redirected = True
            # Off a TTY print() would sit in stdout's buffer for minutes: keep the file in order.
            if isinstance(getattr(sys.stdout, "line_buffering", None), bool):
                self._line_buffering = sys.stdout.line_buffering
                sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Restore fds 1 and 2 and logging. An exception (not SystemExit: the job has said why) goes
        to the file with its traceback and to the console as one line, and propagates."""
        try:
            if exc is not None and not isinstance(exc, SystemExit):
                lines = str(exc).strip().splitlines()
                error = explain(exc) or (f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)
                self._to_file(logging.ERROR, "failed", exc_info=(exc_type, exc, tb))
                if self.debug:
                    self.write("".join(traceback.format_exception(exc_type, exc, tb)))
                self.write(f"failed: {error} (traceback in {self.log_path}; --debug shows it here)\n")
        finally:
            self._restore()

    def _restore(self) -> None:
        if self._saved_logging is not None:
            handlers, root_level, console_level = self._saved_logging
            root = logging.getLogger()
            root.handlers[:] = handlers
            root.setLevel(root_level)
            logging.getLogger(CONSOLE_LOGGER).setLevel(console_level)
            self._saved_logging = None
        if self.redirected:
            for f in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # a broken stream must not keep fds redirected
                    f.flush()
            if self._line_buffering is not None:
                sys.stdout.reconfigure(line_buffering=self._line_buffering)  # type: ignore[union-attr]
            for target, saved in zip((1, 2), self._saved_fds):
                os.dup2(saved, target)
                os.close(saved)
            self._saved_fds, self.redirected = [], False
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._owns_stream and self.stream is not None:
            self.stream.close()
            self.stream, self._owns_stream = None, False

    def setup_logging(self, level: str = "INFO") -> None:
        """Root logger: records at ``level`` to the file, the terminal's records to the console.

        Call it instead of ``logging.basicConfig``, inside the ``with``: it replaces the root
        logger's handlers (one writing to fd 2 would copy every record into the file a second
        time) and the old ones come back on exit.
        """
        if self._file is None:
            raise RuntimeError("Console.setup_logging needs the console entered: "
                               "`with Console(path) as console: console.setup_logging()`")
        root, console_logger = logging.getLogger(), logging.getLogger(CONSOLE_LOGGER)
        if self._saved_logging is None:
            self._saved_logging = (list(root.handlers), root.level, console_logger.level)
        root.handlers[:] = [self._file, _ConsoleHandler(self)]
        root.setLevel(level)
        console_logger.setLevel(min(logging.INFO, root.level))  # the job's own lines at any --log-level

    def _to_file(self, level: int, msg: str, exc_info: Any = None) -> None:
        if self._file is not None:  # straight to the file handler: the console shows it its own way
            self._file.handle(logging.getLogger(CONSOLE_LOGGER).makeRecord(
                CONSOLE_LOGGER, level, __file__, 0, msg, (), exc_info))

    def write(self, text: str, *, partial: bool = False) -> None:
        """Write to the console; ``partial``: a TTY progress line, left without its newline."""
        with self._lock:
            if self.stream is None:
                return
            if self._partial and not partial:
                text = "\r\x1b[K" + text  # clear the progress line; its thread draws it again
            self.stream.write(text)
            self.stream.flush()
            self._partial = partial

    def line(self, text: str) -> None:
        """A terminal line (also logged to the file)."""
        self._to_file(logging.INFO, text)
        self.write(text + "\n")

    def progress(self, label: str, poll: Callable[[], tuple[float, float | None]], *, unit: str = "",
                 interval: float = 1.0) -> ProgressLine:
        """A context manager showing one updating line of ``poll() -> (done, total or None)``."""
        return ProgressLine(self, label, poll, unit=unit, interval=interval)


def _count(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


class ProgressLine:
    """One line of progress, ``  sample  1,234/8,192 questions  12.3/s  eta 9m26s``, from a poll thread.

    On a TTY it is rewritten in place each ``interval``; elsewhere (CI, a file) a new line comes at
    most every 30 s or each 10% of the total, so logs stay short; the file gets those lines too.
    The rate is from the first and the latest readings. A failing ``poll`` is logged to the file
    (once per distinct error) and the last reading kept.
    """

    def __init__(self, console: Console, label: str, poll: Callable[[], tuple[float, float | None]], *,
                 unit: str = "", interval: float = 1.0) -> None:
        self.console, self.label, self.poll, self.unit, self.interval = console, label, poll, unit, interval
        self.first: tuple[float, float] | None = None  # (time, done)
        self.last: tuple[float, float, float | None] | None = None  # (time, done, total)
        self._printed, self._error, self._stop = (0.0, 0.0), "", threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{label}", daemon=True)

    def __enter__(self) -> ProgressLine:
        self.started = time.monotonic()
        self._read()
        self._printed = (self.started, self.last[1] if self.last else 0.0)  # a resumed stage starts part done
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        if not self._thread.is_alive():  # else a poll is stuck in the thread: keep the last reading
            self._read()
        text = self.render(final=True)
        self.console._to_file(logging.INFO, text.strip())
        self.console.write(f"\r{text}\x1b[K\n" if self.console.tty else text + "\n")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()
            self._show()

    def _read(self) -> None:
        try:
            done, total = self.poll()
        except Exception as e:  # a failing count must not kill the job it only reports on
            if repr(e) != self._error:
                self._error = repr(e)
                self.console._to_file(logging.WARNING, f"progress {self.label}: poll failed", sys.exc_info())
            return
        now = time.monotonic()
        if self.first is None or self.first[1] == done:
            # The rate counts from the last reading before progress began: start-up is not rate.
            self.first = (now, float(done))
        self.last = (now, float(done), None if total is None else float(total))

    def rate(self) -> float:
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return 0.0
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])

    def render(self, final: bool = False) -> str:
        """The line of the latest reading (the final one with the elapsed time)."""
        parts = [f"  {self.label}"]
        if self.last is not None:
            _, done, total = self.last
            count = _count(done) + ("" if total is None else "/" + _count(total))
            parts.append(f"{count} {self.unit}" if self.unit else count)
            parts.append(f"{self.rate():,.1f}/s")
            if not final and total is not None and self.rate() > 0 and done < total:
                parts.append(f"eta {format_duration((total - done) / self.rate())}")
        if final:
            parts.append(f"in {format_duration(time.monotonic() - self.started)}")
        return "  ".join(parts)

    def _show(self) -> None:
        if self.last is None:
            return
        now, done, total = self.last
        text = self.render()
        step = bool(total) and abs(done - self._printed[1]) >= NON_TTY_STEP * (total or 0)
        due = step or now - self._printed[0] >= NON_TTY_EVERY
        if due:
            self._printed = (now, done)
            self.console._to_file(logging.INFO, text.strip())
        if self.console.tty:  # a wrapped line cannot be rewritten with "\r": cut it to the width
            width = self.console.width if self.console.width >= 40 else 160  # 0: a terminal of unknown size
            self.console.write(f"\r{text[:width - 1]}\x1b[K", partial=True)
        elif due:
            self.console.write(text + "\n")
