"""Log output that never makes the event loop wait: finished lines go into a bounded queue, one
writer thread moves them to the stream.

The loop's side only appends to a deque. The writer (the standard library's ``QueueListener``,
fed through a ``QueueHandler``) takes everything queued at once, writes it in one call, flushes,
and waits ``flush_interval`` before the next batch, so a busy process makes a few writes a
second whatever its request rate. When the reader of the stream (a container runtime's log
collector on the other end of a pipe) falls behind, the writer blocks in ``write`` and the
queue fills; once it is full, lines are dropped instead of waited for. DEBUG and INFO stop
being accepted a tenth of the capacity earlier than WARN and above, so a backlog of access
lines cannot crowd out the warnings that explain it. Every dropped line is counted by level,
and one WARN line per ``report_interval`` says how many were lost; that line, logged by the
writer thread itself, is never dropped. A FATAL line waits (briefly) until it is written: the
process is about to end.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
FATAL_WAIT_SECONDS = 1.0


def level_label(levelno: int) -> str:
    """The level as the log lines name it."""
    if levelno >= logging.CRITICAL:
        return "FATAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARN"
    return "INFO" if levelno >= logging.INFO else "DEBUG"


class LineQueue:
    """Finished lines waiting for the writer: never blocks the producer, drops when full.

    ``put_nowait`` and ``get`` are what ``QueueHandler`` and ``QueueListener`` call; ``get``
    returns a whole batch (a list of lines), or the listener's sentinel (None) alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.low_capacity = capacity - max(1, capacity // 10)  # where DEBUG and INFO stop
        self._items: deque[str | None] = deque()
        self._ready = threading.Event()  # something is queued
        self._hurry = threading.Event()  # a flush or the stop is waiting: no batching pause
        self._idle = threading.Condition()
        self._busy = False
        self._writer: int | None = None  # the thread that calls get
        self._drop_lock = threading.Lock()
        self.dropped = dict.fromkeys(LEVELS, 0)

    def refuses(self, levelno: int) -> bool:
        """The queue is full for this level. Never for the writer thread's own lines (its one
        report per interval), so the report of losses is not lost itself."""
        limit = self.capacity if levelno >= logging.WARNING else self.low_capacity
        return len(self._items) >= limit and threading.get_ident() != self._writer

    def offer(self, levelno: int, line: str) -> None:
        """Queue ``line``, or count it as dropped when the queue is full for its level."""
        if self.refuses(levelno):
            self.drop(levelno)
            return
        self._items.append(line)
        if not self._ready.is_set():
            self._ready.set()

    def drop(self, levelno: int) -> None:
        with self._drop_lock:
            self.dropped[level_label(levelno)] += 1

    def put_nowait(self, item: tuple[int, str] | None) -> None:
        if item is None:  # the listener's sentinel: always accepted, it ends the writer
            self._items.append(None)
            self._hurry.set()
            self._ready.set()
            return
        self.offer(*item)

    def get(self, block: bool = True) -> list[str] | None:
        """Everything queued before the sentinel; the sentinel alone once nothing precedes it."""
        self._writer = threading.get_ident()
        while not self._items:
            self._ready.wait()
            self._ready.clear()
        self._busy = True
        batch: list[str] = []
        while self._items:
            item = self._items.popleft()
            if item is None:
                if not batch:
                    self.batch_done()
                    return None
                self._items.appendleft(None)
                self._ready.set()
                break
            batch.append(item)
        return batch

    def batch_done(self) -> None:
        with self._idle:
            self._busy = False
            self._idle.notify_all()

    def pause(self, seconds: float) -> None:
        """The writer's wait between batches, cut short by a flush or the stop."""
        if self._hurry.wait(seconds):
            self._hurry.clear()

    def wait_written(self, timeout: float) -> bool:
        """Until every line queued so far is written and flushed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._items or self._busy:
                self._hurry.set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.05))
        return True


class QueuedLines(QueueHandler):
    """Formats each record on the thread that logs it (the trace id and the request's
    credentials are context variables there) and queues the finished line."""

    queue: LineQueue

    def __init__(self, lines: LineQueue) -> None:
        super().__init__(lines)

    def emit(self, record: logging.LogRecord) -> None:
        if self.queue.refuses(record.levelno):  # not worth formatting
            self.queue.drop(record.levelno)
            return
        super().emit(record)
        if record.levelno >= logging.CRITICAL:
            # FATAL comes right before the process ends, by any path (an exit code, a
            # crash): worth a bounded wait so that it, and what led to it, is written.
            self.queue.wait_written(FATAL_WAIT_SECONDS)

    def prepare(self, record: logging.LogRecord) -> Any:
        return (record.levelno, self.format(record))


Report = Callable[[Mapping[str, int]], None]
"""Told how many lines of each level were dropped since the last report (only when some were)."""


class LineWriter(QueueListener):
    """The one thread that writes: a batch per call, one flush per batch."""

    def __init__(
        self,
        lines: LineQueue,
        stream: TextIO,
        *,
        terminator: str = "\n",
        flush_interval: float = 0.1,
        report_interval: float = 10.0,
        report: Report | None = None,
    ) -> None:
        super().__init__(lines)
        self.lines = lines
        self.stream = stream
        self.terminator = terminator
        self.flush_interval = flush_interval
        self.report_interval = report_interval
        self.report = report
        self._reported = dict.fromkeys(LEVELS, 0)
        self._last_report = -report_interval
        self._failed = False  # said once on stderr; later failures of the same stream are not

    def dequeue(self, block: bool) -> Any:
        return self.lines.get(block)

    def handle(self, record: Any) -> None:
        batch: list[str] = record
        try:
            self.stream.write(self.terminator.join(batch) + self.terminator)
            self.stream.flush()
        except (OSError, ValueError) as exc:  # a broken or closed stream: say it on stderr
            if not self._failed and self.stream is not sys.stderr:
                print(f"log output failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._failed = True
        finally:
            self.lines.batch_done()
        self._report_drops()
        self.lines.pause(self.flush_interval)

    def _report_drops(self) -> None:
        now = time.monotonic()
        if self.report is None or now - self._last_report < self.report_interval:
            return
        dropped = dict(self.lines.dropped)
        lost = {level: dropped[level] - self._reported[level] for level in LEVELS}
        if any(lost.values()):
            self._reported = dropped
            self._last_report = now
            self.report({level: count for level, count in lost.items() if count})

    def close(self, timeout: float) -> bool:
        """Write what is queued (for at most ``timeout`` seconds), then end the thread; False
        when the stream did not take it all in time (the thread is a daemon: exit proceeds)."""
        if not self.lines.wait_written(timeout):
            return False
        self.stop()
        return True
