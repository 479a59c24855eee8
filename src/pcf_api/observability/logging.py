"""One logging pipeline for the service's own logs and every library's (uvicorn included).

structlog and the standard library share the same processors and the same handler, so a line
looks the same whoever wrote it: in JSON, one object with ``timestamp`` (ISO 8601 UTC),
``level``, ``module``, ``trace_id`` and ``message``.

Redaction is done twice. Fields whose names say they hold credentials are replaced while the
event is still structured, and then the finished line is scrubbed of every configured secret
value and of the credential headers of the current request. The second pass is what makes it a
guarantee: it sees the exact bytes that are written, whichever logger produced them. The same
pass replaces personal data (e-mail addresses, card numbers, configured patterns).

Lines are finished on the thread that logs them and written by another (``logqueue``): the event
loop never waits for stdout, and when stdout's reader falls behind, lines are dropped and
counted rather than the service stalled.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from pcf_api.observability.exceptions import exception_fields
from pcf_api.observability.logqueue import LEVELS, LineQueue, LineWriter, QueuedLines
from pcf_api.observability.privacy import (
    ClientIpMode,
    PersonalData,
    Pseudonyms,
    SubjectMode,
    client_renderer,
    same,
    subject_renderer,
)
from pcf_api.observability.tracecontext import current_span_id, current_trace_id

if TYPE_CHECKING:
    from pcf_api.config import Settings

REDACTED = "[REDACTED]"

_SENSITIVE_FIELD = re.compile(
    r"(authorization|cookie|password|passwd|secret|token|api[_-]?key|credential)", re.IGNORECASE
)
# A scheme name followed by a value, unless that word is prose ("Bearer tokens are refused",
# "Basic realm"): a word of this list ending the word, with at most a full stop after it, or a
# challenge's ``realm=``.
_PROSE_AFTER_SCHEME = (
    "tokens?|auth|authentication|authori[sz]ation|credentials?|schemes?|headers?|realm|is|are|"
    "was|were|and|or|not|the|a|an|only|with|without|required|missing|expected|given|must|may|"
    "can|cannot|in|for|of|to"
)
_CREDENTIAL_SCHEME = re.compile(
    r"\b(Bearer|Basic|Digest)\s+"
    rf"(?!(?:{_PROSE_AFTER_SCHEME})\.?(?![A-Za-z0-9._~+/=-])|realm=)"
    r"[A-Za-z0-9._~+/=-]+",
    re.IGNORECASE,
)

_LEVEL_NAMES = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARN",
    "warn": "WARN",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "FATAL",
    "fatal": "FATAL",
}

# Credential header values of the request being served, scrubbed from every line it logs.
request_credentials: ContextVar[tuple[str, ...]] = ContextVar("request_credentials", default=())


class SecretScrubber:
    """Replaces known secret values, raw and in every escaped form, in finished log lines."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._needles: tuple[str, ...] = ()
        self.personal = PersonalData()

    def set_secrets(self, values: Iterable[str]) -> None:
        self._secrets = tuple(dict.fromkeys(values))
        self._needles = _needles_for(self._secrets)

    def add_secrets(self, values: Iterable[str]) -> None:
        """Scrub ``values`` too, from the next line on (a rotated secret's new value; the old
        one stays listed, as lines about the past may still carry it)."""
        self.set_secrets((*self._secrets, *values))

    def scrub(self, line: str) -> str:
        return self.personal.scrub(self.scrub_secrets(line))

    def scrub_secrets(self, line: str) -> str:
        request = request_credentials.get()
        # One list, longest first, so a short value never splits a longer one it is part of.
        needles = _needles_for((*self._secrets, *request)) if request else self._needles
        for needle in needles:
            if needle in line:
                line = line.replace(needle, REDACTED)
        if _may_name_a_scheme(line):
            line = _CREDENTIAL_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", line)
        # A replacement can itself complete a needle: a secret that is part of the marker, or one
        # that forms again across the marker's edge. Cutting them out shortens the line each
        # round, so this ends, and it ends with none left.
        while any(needle in line for needle in needles):
            for needle in needles:
                line = line.replace(needle, "")
        return line


def _may_name_a_scheme(line: str) -> bool:
    """A cheap test before the case-insensitive regex, which costs ≈ 5 µs on every line."""
    lowered = line.lower()
    return "bearer" in lowered or "basic" in lowered or "digest" in lowered


def _needles_for(values: Iterable[str]) -> tuple[str, ...]:
    """Each value as written raw, as ``repr`` writes it (console values, ``%r``, tracebacks),
    and each of those as a JSON string escapes it."""
    needles: set[str] = set()
    for value in values:
        if not value:
            continue
        # Inside a repr, ' is escaped when the quotes are ' and left alone when they are ";
        # the latter only happens for text without a ".
        forms = {value, repr(value + '"')[1:-2]}
        if '"' not in value:
            forms.add(repr(value + "'")[1:-2])
        for form in forms:
            needles.add(form)
            needles.add(orjson.dumps(form).decode()[1:-1])
    return tuple(sorted(needles, key=len, reverse=True))


scrubber = SecretScrubber()


class _ScrubbingFormatter(structlog.stdlib.ProcessorFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrubber.scrub(super().format(record))


def _redact_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if key not in {"message", "event"} and _SENSITIVE_FIELD.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _redact_value(value)
    return event_dict


def _redact_value(value: Any) -> Any:
    """Sensitive keys of mappings at any depth, lists and tuples included."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _SENSITIVE_FIELD.search(str(key)) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(item) for item in value)
    return value


def _add_level(_: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    name = record.levelname.lower() if record is not None else method_name
    event_dict["level"] = _LEVEL_NAMES.get(name, name.upper())
    return event_dict


def _add_module(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("module", record.name)
    else:
        event_dict.setdefault("module", event_dict.pop("logger", None) or "pcf_api")
    event_dict.pop("logger", None)
    return event_dict


def _add_trace_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("trace_id", current_trace_id.get())
    span_id = current_span_id()
    if span_id is not None:
        event_dict.setdefault("span_id", span_id)
    return event_dict


_LEADING_KEYS = ("timestamp", "level", "module", "trace_id", "message")


def _order_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The five fields every line has come first, so lines read alike in any viewer."""
    ordered = {key: event_dict.pop(key, None) for key in _LEADING_KEYS}
    ordered.update(event_dict)
    return ordered


def _orjson_dumps(event_dict: MutableMapping[str, Any], **_: Any) -> str:
    try:
        return orjson.dumps(event_dict, default=str).decode()
    except orjson.JSONEncodeError:
        # A value orjson refuses (keys that are not text, an integer over 64 bits, too deep)
        # must not cost the line, nor send the unscrubbed event to stderr via handleError.
        safe = {str(key): _dumpable(value) for key, value in event_dict.items()}
        return orjson.dumps(safe, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _dumpable(value: Any) -> Any:
    try:
        orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return repr(value)
    return value


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        _add_level,
        _add_module,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_trace_id,
        structlog.stdlib.PositionalArgumentsFormatter(),
        _redact_fields,
    ]


DROP_REPORT_SECONDS = 10.0
FLUSH_SECONDS = 0.1


class _Output:
    """The process's current log output: its handler, queue and writer thread."""

    def __init__(self, handler: QueuedLines, lines: LineQueue, writer: LineWriter) -> None:
        self.handler = handler
        self.lines = lines
        self.writer = writer
        self.drain_seconds = 30.0


class _Current:
    output: _Output | None = None


_current = _Current()
_dropped_before: dict[str, int] = dict.fromkeys(LEVELS, 0)  # by outputs replaced since start


def configure_logging(
    *,
    level: str = "INFO",
    log_format: str = "json",
    module_levels: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    buffer_lines: int = 10_000,
    tracebacks: bool = True,
    scrub: Iterable[str] = ("email", "card"),
    scrub_patterns: Iterable[str] = (),
    client_ip: ClientIpMode = "full",
    subject: SubjectMode = "raw",
    audit_subject: SubjectMode = "raw",
    hash_key: str | None = None,
    drain_seconds: float = 30.0,
) -> None:
    """Route structlog and the standard library into one queued output; safe to call again
    (what the previous output still held is written first)."""
    scrubber.set_secrets(secrets)
    scrubber.personal = PersonalData(scrub, scrub_patterns)
    exceptions = exception_fields(tracebacks=tracebacks)
    renderer: Processor
    final: list[Processor]
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        final = [exceptions]
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        final = [exceptions, structlog.processors.EventRenamer("message"), _order_keys]

    formatter = _ScrubbingFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *final,
            renderer,
        ],
    )
    close_logging()
    lines = LineQueue(buffer_lines)
    handler = QueuedLines(lines)
    handler.setFormatter(formatter)
    writer = LineWriter(
        lines,
        stream or sys.stdout,
        flush_interval=FLUSH_SECONDS,
        report_interval=DROP_REPORT_SECONDS,
        report=_report_dropped,
    )
    output = _current.output = _Output(handler, lines, writer)
    output.drain_seconds = drain_seconds
    writer.start()

    pseudonyms.set_key(hash_key)
    access_log.use(
        output if log_format == "json" else None,
        client=client_renderer(client_ip, pseudonyms),
        subject=subject_renderer(subject, pseudonyms),
    )
    audit_log.use(
        output if log_format == "json" else None,
        subject=subject_renderer(audit_subject, pseudonyms),
    )

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
        library_logger.setLevel(logging.NOTSET)
    # Alembic narrates every step at INFO; the migrate command logs the outcome itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name, module_level in (module_levels or {}).items():
        logging.getLogger(name).setLevel(module_level)
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def configure_from_settings(settings: Settings) -> None:
    """``configure_logging`` as the settings say (``log`` section, secrets to scrub, and the
    shutdown timeout as the bound of the last drain)."""
    log = settings.log
    key = log.hash_key.get_secret_value() if log.hash_key is not None else None
    configure_logging(
        level=log.level,
        log_format=log.format,
        module_levels=log.levels,
        secrets=settings.secret_values(),
        buffer_lines=log.buffer_lines,
        tracebacks=log.tracebacks,
        scrub=log.scrub,
        scrub_patterns=log.scrub_patterns,
        client_ip=log.client_ip,
        subject=log.subject,
        audit_subject=log.audit_subject,
        hash_key=key,
        drain_seconds=settings.server.shutdown_timeout,
    )
    hashing = "hash" in (log.client_ip, log.subject, log.audit_subject)
    if hashing and key is None and not settings.is_development:
        get_logger(__name__).warning(
            "log.hash_key is not set: hashed subjects and addresses correlate within this "
            "process only (set log.hash_key_file to share a key between replicas)"
        )


def flush_logs(timeout: float = 5.0) -> bool:
    """Wait until every line logged so far is written; False when that took over ``timeout``."""
    output = _current.output
    return output is None or output.lines.wait_written(timeout)


def close_logging(timeout: float | None = None) -> bool:
    """Write what is queued (for at most ``timeout``, by default the configured drain bound)
    and stop the writer thread; False when the stream would not take it all in time."""
    output, _current.output = _current.output, None
    if output is None:
        return True
    for level, count in output.lines.dropped.items():
        _dropped_before[level] += count
    return output.writer.close(output.drain_seconds if timeout is None else timeout)


atexit.register(close_logging)  # after `stopped`: the last lines reach stdout before exit


def dropped_lines() -> dict[str, int]:
    """Lines dropped since the process started, by level (the output was full for them)."""
    output = _current.output
    current = output.lines.dropped if output is not None else {}
    return {level: _dropped_before[level] + current.get(level, 0) for level in LEVELS}


def _report_dropped(lost: Mapping[str, int]) -> None:
    get_logger(__name__).warning(
        "log lines dropped",
        dropped=dict(lost),
        dropped_total=sum(lost.values()),
        reason="the log output's reader fell behind and the buffer (log.buffer_lines) was full",
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


pseudonyms = Pseudonyms()
"""The key of hashed subjects and addresses; ``set_key`` follows a rotated ``log.hash_key``."""


class RequestLog:
    """What a request's handlers learn that its access line should say (who the caller is)."""

    __slots__ = ("subject",)

    def __init__(self) -> None:
        self.subject: str | None = None


current_request_log: ContextVar[RequestLog | None] = ContextVar("current_request_log", default=None)


def note_subject(subject: str) -> None:
    """The current request's caller, for its access line (rendered as ``log.subject`` says)."""
    request = current_request_log.get()
    if request is not None:
        request.subject = subject


Render = Callable[[Any], Any]


class FlatLog:
    """A frequent line with known flat fields, written without the general pipeline's work.

    The access line (one per request) and the audit line (one per authorization decision) are
    most of what the service logs; through the general path each cost ≈ 10 % of a small
    request's CPU (see docs/benchmarks.md). Their fields are known: no credential-named keys,
    no nested values, no positional arguments. So in JSON they are rendered here, with the same
    leading keys in the same order, scrubbed by the same scrubber and queued on the same output.
    In console format, or when that output is no longer the root's handler, they take the
    general path. Fields that name people (``client``, ``subject``) pass through the renderers
    the privacy settings chose; a renderer's None leaves the field out.
    """

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        self._logger = logging.getLogger(name)
        self._root = logging.getLogger()
        self._fallback = get_logger(name)
        self._output: _Output | None = None
        self._renderers: tuple[tuple[str, Render], ...] = ()
        self._hidden: frozenset[str] = frozenset()

    def use(self, output: _Output | None, **renderers: Render) -> None:
        self._output = output
        self._renderers = tuple(renderers.items())
        # What a renderer hashed or shortened is not personal data any more; the rest is checked.
        self._hidden = frozenset(key for key, render in renderers.items() if render is not same)

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def write(self, level: int, fields: Mapping[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        output = self._output
        if output is None or output.handler not in self._root.handlers:
            self._fallback.log(level, self.message, **self._rendered(dict(fields)))
            return
        if output.lines.refuses(level):  # dropped: not worth rendering
            output.lines.drop(level)
            return
        event = self._rendered(
            {
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "level": _LEVEL_NAMES[logging.getLevelName(level).lower()],
                "module": self.name,
                "trace_id": current_trace_id.get(),
                "message": self.message,
                **fields,
            }
        )
        span_id = current_span_id()
        if span_id is not None:
            event["span_id"] = span_id
        # Personal data is looked for in the field values, not in the whole line: the leading
        # fields are the service's own, and one pattern pass over a line costs ≈ 10 µs.
        personal = scrubber.personal
        for key, value in fields.items():
            if isinstance(value, str) and key not in self._hidden:
                event[key] = personal.scrub(value)
        output.lines.offer(level, scrubber.scrub_secrets(_orjson_dumps(event)))

    def _rendered(self, event: dict[str, Any]) -> dict[str, Any]:
        for key, render in self._renderers:
            value = event.get(key)
            if value is not None:
                rendered = render(value)
                if rendered is None:
                    del event[key]
                else:
                    event[key] = rendered
        return event


access_log = FlatLog("pcf_api.access", "request")
audit_log = FlatLog("pcf_api.audit", "authorization decision")
