"""The log queue and its writer: producers never wait, losses are counted and reported, the
last lines are written before the end."""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TextIO

import pytest

from pcf_api.observability.logqueue import LEVELS, LineQueue, LineWriter, QueuedLines


def pipe_bytes(stream: TextIO) -> int:
    """What the pipe behind ``stream`` holds before a write blocks (64 KiB by default)."""
    return fcntl.fcntl(stream.fileno(), fcntl.F_GETPIPE_SZ)


def drain(read_end: int) -> None:
    """Read the pipe's descriptor until end of file, past any lock of the file object."""
    with contextlib.suppress(OSError):
        while os.read(read_end, 1 << 16):
            pass


@pytest.fixture
def pipe() -> Iterator[tuple[TextIO, TextIO]]:
    """A real pipe (64 KiB of kernel buffer), as stdout is in a container: (reader, writer).

    When a test fails while the writer thread is blocked on the full pipe, that thread holds the
    writing file's lock and closing the file would wait for it forever: the pipe is drained
    through its descriptor first, so the blocked write completes and the close goes through.
    """
    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "r")
    writer = os.fdopen(write_end, "w")
    yield reader, writer
    draining: threading.Thread | None = None
    if not reader.closed:
        draining = threading.Thread(target=drain, args=(read_end,), daemon=True)
        draining.start()
    with contextlib.suppress(OSError, ValueError):
        writer.close()
    if draining is not None:
        draining.join(5)
        assert not draining.is_alive(), "the pipe's write end is still open"
    with contextlib.suppress(OSError):
        reader.close()


class Reports:
    def __init__(self) -> None:
        self.seen: list[dict[str, int]] = []

    def __call__(self, lost: Mapping[str, int]) -> None:
        self.seen.append(dict(lost))


def test_debug_and_info_stop_a_tenth_of_the_capacity_before_warnings() -> None:
    lines = LineQueue(100)
    for n in range(200):
        lines.offer(logging.INFO, f"info {n}")
    for n in range(50):
        lines.offer(logging.WARNING, f"warn {n}")

    assert lines.dropped == {"DEBUG": 0, "INFO": 110, "WARN": 40, "ERROR": 0, "FATAL": 0}
    assert lines.refuses(logging.ERROR)
    batch = lines.get()
    assert batch is not None
    assert batch[:90] == [f"info {n}" for n in range(90)]
    assert batch[90:] == [f"warn {n}" for n in range(10)]


def test_each_batch_is_one_write_and_one_flush() -> None:
    class CountingStream(io.StringIO):
        writes = 0
        flushes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

        def flush(self) -> None:
            self.flushes += 1

    stream = CountingStream()
    lines = LineQueue(1000)
    for n in range(300):
        lines.offer(logging.INFO, f"line {n}")
    writer = LineWriter(lines, stream, flush_interval=0.1)
    writer.start()
    assert writer.close(5)

    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(300)]
    assert (stream.writes, stream.flushes) == (1, 1)


def test_a_stalled_reader_never_makes_a_producer_wait(pipe: tuple[TextIO, TextIO]) -> None:
    reader, stream = pipe
    lines = LineQueue(1000)
    writer = LineWriter(lines, stream, flush_interval=0.01, report=Reports())
    writer.start()
    line = "x" * 300

    started = time.perf_counter()
    for _ in range(5000):  # 1.5 MB: the pipe takes 64 KiB, the queue 1000 lines
        lines.offer(logging.INFO, line)
    elapsed = time.perf_counter() - started

    # A producer that waited would wait forever here (nobody reads); 5 s is a loaded machine.
    assert elapsed < 5.0
    # Written: what the pipe holds, and at most one batch (≤ the capacity) blocked in write.
    pipe_lines = pipe_bytes(stream) // (len(line) + 1) + 1
    assert lines.dropped["INFO"] >= 5000 - pipe_lines - 2 * lines.capacity
    assert not writer.close(0.2)  # the stream takes nothing: the bounded drain gives up
    reader.close()  # now every write fails at once: the writer gets through the queue
    assert writer.close(5)


def test_after_the_reader_catches_up_one_report_says_how_many_were_lost(
    pipe: tuple[TextIO, TextIO],
) -> None:
    reader, stream = pipe
    # The pipe is full before the writer starts: its first write blocks, whatever the timing.
    capacity = pipe_bytes(stream)
    filler = ("f" * 63 + "\n") * (capacity // 64)
    assert os.write(stream.fileno(), filler.encode()) == capacity
    report = Reports()
    lines = LineQueue(200)
    writer = LineWriter(lines, stream, flush_interval=0.01, report_interval=60, report=report)
    writer.start()
    for _ in range(2000):
        lines.offer(logging.INFO, "y" * 200)
    lines.offer(logging.ERROR, "the error")
    assert report.seen == []  # the writer is blocked on the full pipe

    drained: list[str] = []
    reading = threading.Thread(target=lambda: drained.extend(reader), daemon=True)
    reading.start()
    deadline = time.monotonic() + 5
    while not report.seen and time.monotonic() < deadline:
        time.sleep(0.01)

    assert report.seen == [{"INFO": lines.dropped["INFO"]}]
    assert lines.wait_written(5)  # the backlog is out: "after" finds room in the queue
    for _ in range(10):  # more losses within the interval: no second report yet
        lines.drop(logging.INFO)
    lines.offer(logging.INFO, "after")
    assert writer.close(5)
    assert len(report.seen) == 1
    stream.close()
    reading.join(5)
    assert "the error\n" in drained
    assert drained[-1] == "after\n"


def test_the_sentinel_ends_the_writer_after_every_line_before_it() -> None:
    stream = io.StringIO()
    lines = LineQueue(100)
    writer = LineWriter(lines, stream, flush_interval=5.0)  # close does not wait for the pause
    writer.start()
    lines.offer(logging.INFO, "one")
    assert lines.wait_written(5)
    lines.offer(logging.INFO, "two")

    started = time.monotonic()
    assert writer.close(5)

    assert time.monotonic() - started < 1.0
    assert stream.getvalue() == "one\ntwo\n"


def test_records_are_formatted_by_the_thread_that_logs_them() -> None:
    lines = LineQueue(100)
    handler = QueuedLines(lines)
    formatted_on: list[str] = []

    class Recording(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            formatted_on.append(threading.current_thread().name)
            return record.getMessage()

    handler.setFormatter(Recording())
    logger = logging.Logger("test_logqueue")
    logger.addHandler(handler)
    logger.warning("hello %s", "there")

    assert formatted_on == [threading.current_thread().name]
    assert lines.get() == ["hello there"]


def test_a_record_that_would_be_dropped_is_not_formatted() -> None:
    lines = LineQueue(100)
    for _ in range(100):
        lines.offer(logging.ERROR, "full")
    handler = QueuedLines(lines)
    formatted: list[str] = []

    class Recording(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            formatted.append(record.getMessage())
            return ""

    handler.setFormatter(Recording())
    logger = logging.Logger("test_logqueue")
    logger.addHandler(handler)
    logger.info("lost")
    logger.critical("lost too")

    assert formatted == []
    assert lines.dropped["INFO"] == 1
    assert lines.dropped["FATAL"] == 1


def test_every_level_is_counted_from_the_start() -> None:
    assert LineQueue(100).dropped == dict.fromkeys(LEVELS, 0)
