"""jobs._console: our lines on the terminal, everything else in the run's log file.

pytest captures fds 1 and 2 itself and replaces ``sys.stdout`` with its own file, so the full
picture (print, a child process, the default console stream) is checked in a child Python; the
in-process tests give Console an explicit stream.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from jobs._console import Console, explain, format_duration, format_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent("""
    import logging, os, subprocess, sys
    from jobs._console import Console

    with Console(sys.argv[1]) as console:
        console.setup_logging()
        os.write(1, b"fd1-noise\\n")
        os.write(2, b"fd2-noise\\n")
        print("print-noise")
        print("stderr-noise", file=sys.stderr)
        subprocess.run(["echo", "child-noise"], check=True)
        console.line("our line")
        logging.getLogger("jobs.console").info("console record")
        logging.getLogger("reasoner.data").info("reasoner info")
        logging.getLogger("reasoner.data").warning("reasoner warning")
        logging.getLogger("vllm").warning("engine warning")
    os.write(1, b"after-1\\n")
    os.write(2, b"after-2\\n")
""")


def _fd_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_quiet_sends_everything_else_to_the_log_file(tmp_path) -> None:
    log = tmp_path / "logs" / "job.log"
    env = {**os.environ, "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-c", CHILD, str(log)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "after-1\n"  # fd 1 is restored; nothing printed inside reached it
    assert out.stderr.splitlines() == ["our line", "console record", "WARNING reasoner.data: reasoner warning",
                                       "after-2"]
    text = log.read_text()
    for noise in ("fd1-noise", "fd2-noise", "print-noise", "stderr-noise", "child-noise", "our line",
                  "console record", "reasoner info", "reasoner warning", "engine warning"):
        assert noise in text
    assert "after-" not in text


def test_quiet_in_process_redirects_and_restores_fds(tmp_path, capfd) -> None:
    log, stream = tmp_path / "job.log", io.StringIO()
    before = _fd_identity(1), _fd_identity(2)
    with Console(str(log), stream=stream) as console:
        assert console.redirected
        assert _fd_identity(1) == _fd_identity(2) == (os.stat(log).st_dev, os.stat(log).st_ino)
        os.write(1, b"fd1-noise\n")
        os.write(2, b"fd2-noise\n")
        subprocess.run(["echo", "child-noise"], check=True)
        console.line("our line")
    assert (_fd_identity(1), _fd_identity(2)) == before
    captured = capfd.readouterr()
    assert "noise" not in captured.out + captured.err
    assert stream.getvalue() == "our line\n"
    assert all(s in log.read_text() for s in ("fd1-noise", "fd2-noise", "child-noise", "our line"))


def test_records_reach_console_and_file_by_logger_and_level(tmp_path) -> None:
    log, stream = tmp_path / "job.log", io.StringIO()
    root_handlers = list(logging.getLogger().handlers)
    with Console(str(log), stream=stream) as console:
        console.setup_logging("INFO")
        logging.getLogger("jobs.console").info("stage 1/2: sample")
        logging.getLogger("reasoner.verify").info("reasoner info")
        logging.getLogger("reasoner.verify").warning("reasoner warning")
        logging.getLogger("jobs.sample").error("jobs error")
        logging.getLogger("somelib.data").warning("library warning")  # not ray: Ray stops its loggers propagating
        try:
            raise KeyError("k")
        except KeyError:
            logging.getLogger("jobs.sample").exception("with a traceback")
    assert logging.getLogger().handlers == root_handlers  # logging is restored
    assert stream.getvalue().splitlines() == [
        "stage 1/2: sample", "WARNING reasoner.verify: reasoner warning", "ERROR jobs.sample: jobs error",
        f"ERROR jobs.sample: with a traceback (traceback in {log})"]
    text = log.read_text()
    assert "INFO reasoner.verify: reasoner info" in text and "library warning" in text
    assert "Traceback" in text and "KeyError: 'k'" in text


def test_not_quiet_leaves_fds_alone_and_shows_every_record(tmp_path) -> None:
    log, stream = tmp_path / "job.log", io.StringIO()
    before = _fd_identity(1), _fd_identity(2)
    with Console(str(log), quiet=False, stream=stream) as console:
        assert not console.redirected and (_fd_identity(1), _fd_identity(2)) == before
        console.setup_logging("INFO")
        logging.getLogger("reasoner.verify").info("reasoner info")
        logging.getLogger("vllm").info("engine info")
        console.line("our line")
    assert "reasoner info" in stream.getvalue() and "engine info" in stream.getvalue()
    assert stream.getvalue().count("our line") == 1
    assert "reasoner info" in log.read_text() and "our line" in log.read_text()


def test_no_redirect_when_stderr_is_not_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with Console(str(tmp_path / "job.log")) as console:
        assert not console.redirected and console.stream is sys.stderr
        console.line("our line")
    assert sys.stderr.getvalue() == "our line\n"


class _Counter:
    """A poll that counts up by one a call to ``total``; it fails on the calls listed in ``fail``."""

    def __init__(self, total: int, fail: tuple[int, ...] = ()) -> None:
        self.done, self.total, self.calls, self.fail = 0, total, 0, fail

    def __call__(self) -> tuple[float, float | None]:
        self.calls += 1
        if self.calls in self.fail:
            raise OSError("listing failed")
        self.done = min(self.done + 1, self.total)
        return self.done, self.total


def _wait(predicate, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.005)


def test_progress_on_a_non_tty_prints_few_lines_and_a_final_one(tmp_path) -> None:
    log, stream = tmp_path / "job.log", io.StringIO()
    poll = _Counter(200, fail=(5, 6))
    with Console(str(log), stream=stream) as console:
        with console.progress("sample", poll, unit="questions", interval=0.001):
            _wait(lambda: poll.done >= 200)
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 12  # a line each 10% of the total at most, and the final one
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("  sample  200/200 questions  ") and " in " in lines[-1]
    assert "eta " in lines[0]
    text = log.read_text()
    assert text.count("poll failed") == 1 and "OSError: listing failed" in text  # logged once, job went on
    assert "sample  200/200 questions" in text


def test_progress_on_a_tty_rewrites_one_line(tmp_path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream, poll = Tty(), _Counter(50)
    with Console(str(tmp_path / "job.log"), stream=stream) as console:
        with console.progress("train", poll, interval=0.001):
            _wait(lambda: poll.done >= 5)
            console.line("a line meanwhile")  # clears the progress line first
            _wait(lambda: poll.done >= 50)
        console.line("next")
    out = stream.getvalue()
    assert out.count("\n") == 3 and out.count("\r") > 2  # each update rewrites the line in place
    assert "\r\x1b[Ka line meanwhile\n" in out
    assert out.endswith("\x1b[K\nnext\n")
    final = out.rsplit("\r", 1)[1]
    assert final.startswith("  train  50/50  ") and " in " in final


def test_progress_thread_stops_when_the_block_raises(tmp_path) -> None:
    stream = io.StringIO()
    with Console(str(tmp_path / "job.log"), stream=stream) as console:
        with pytest.raises(RuntimeError):
            with console.progress("sample", lambda: (3, None), interval=0.001) as progress:
                time.sleep(0.02)
                raise RuntimeError("stage failed")
        assert not progress._thread.is_alive()
    assert stream.getvalue().splitlines()[-1].startswith("  sample  3  ")
    assert not any(t.name == "progress-sample" for t in threading.enumerate())


def test_an_exception_leaves_its_traceback_in_the_file_and_one_line_on_the_console(tmp_path) -> None:
    log, stream = tmp_path / "job.log", io.StringIO()
    with pytest.raises(ValueError, match="boom"):
        with Console(str(log), stream=stream):
            raise ValueError("boom\nsecond line")
    assert stream.getvalue() == f"failed: ValueError: boom (traceback in {log}; --debug shows it here)\n"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "ValueError: boom" in text


def test_debug_shows_the_traceback_on_the_console_too(tmp_path) -> None:
    stream = io.StringIO()
    with pytest.raises(ValueError):
        with Console(str(tmp_path / "job.log"), stream=stream, debug=True):
            raise ValueError("boom")
    assert "Traceback (most recent call last)" in stream.getvalue() and "failed: ValueError: boom" in stream.getvalue()


def test_a_full_disk_is_named_with_the_fix_even_wrapped_by_ray(tmp_path) -> None:
    """Ray hands a worker's error back wrapped (``RayTaskError.cause``); the line names the disk."""
    import errno

    from ray.exceptions import RayTaskError

    full = OSError(errno.ENOSPC, "No space left on device", "/runs/r1/candidates/part-1.parquet")
    wrapped = RayTaskError("SampleWorker.__call__", "traceback text", full)
    stream = io.StringIO()
    with pytest.raises(RayTaskError):
        with Console(str(tmp_path / "job.log"), stream=stream):
            raise wrapped
    line = stream.getvalue()
    assert line.startswith("failed: no space left on the device writing /runs/r1/candidates/part-1.parquet: free "
                           "space"), line
    assert "it resumes where it stopped" in line
    assert explain(ValueError("x")) is None


def test_system_exit_is_not_reported_as_a_failure(tmp_path) -> None:
    stream = io.StringIO()
    with pytest.raises(SystemExit):
        with Console(str(tmp_path / "job.log"), stream=stream):
            raise SystemExit(1)
    assert stream.getvalue() == ""


def test_format_duration() -> None:
    assert format_duration(0) == "0.0 s"
    assert format_duration(8.24) == "8.2 s"
    assert format_duration(59.94) == "59.9 s"
    assert format_duration(59.96) == "1m00s"
    assert format_duration(185) == "3m05s"
    assert format_duration(3599.4) == "59m59s"
    assert format_duration(3599.6) == "1h00m"
    assert format_duration(3720) == "1h02m"
    assert format_duration(90000) == "25h00m"


def test_format_table() -> None:
    table = format_table(["stage", "in", "out", "rejected", "time"],
                         [["make_examples", None, 1234, 0, 8.24],
                          ["distill", 1234, 987, 247, 185.0],
                          ["build_pairs", 1000000, 12, None, 3720.5]])
    assert table.splitlines() == [
        "stage                 in    out  rejected     time",
        "-------------  ---------  -----  --------  -------",
        "make_examples          -  1,234         0      8.2",
        "distill            1,234    987       247    185.0",
        "build_pairs    1,000,000     12         -  3,720.5",
    ]


def test_format_table_left_aligns_text_and_rejects_ragged_rows() -> None:
    assert format_table(["model", "acc"], [["sft", 0.5], ["dpo", None]]) == "\n".join([
        "model  acc", "-----  ---", "sft    0.5", "dpo      -"])
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        format_table(["a", "b"], [[1]])
