"""Log lines for journald (priority prefix, no timestamp) only when stderr is the journal's very
stream, timestamped lines elsewhere, and JSON objects with the record's extra fields."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from localvmss.errors import InvalidSpec
from localvmss.logs import configure_logging, make_formatter, priority, stream_is_journal


def record(level: int, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("localvmss.test", level, __file__, 1, "hello %s", ("world",), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def journal_env(stream: IO[str]) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[IO[str]]:
    with open(tmp_path / "stderr", "w+", encoding="utf-8") as f:
        yield f


@pytest.fixture
def root_restored() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("level", "prio"),
    [
        (logging.CRITICAL, 2),
        (logging.ERROR, 3),
        (logging.WARNING, 4),
        (logging.INFO, 6),
        (logging.DEBUG, 7),
        (logging.INFO + 5, 6),  # a custom level between INFO and WARNING
        (1, 7),
    ],
)
def test_priority_per_level(level: int, prio: int) -> None:
    assert priority(level) == prio
    line = make_formatter("text", journal=True).format(record(level))
    assert line == f"<{prio}>localvmss.test: hello world"


@pytest.mark.parametrize(
    ("value", "journal"),
    [
        ("match", True),
        ("other-inode", False),
        ("other-device", False),
        ("", False),
        ("12", False),
        ("a:b", False),
        (":", False),
        (None, False),
    ],
)
def test_journal_stream_must_match_stderr(stream: IO[str], value: str | None, journal: bool) -> None:
    st = os.fstat(stream.fileno())
    env = {
        "match": f"{st.st_dev}:{st.st_ino}",
        "other-inode": f"{st.st_dev}:{st.st_ino + 1}",
        "other-device": f"{st.st_dev + 1}:{st.st_ino}",
    }.get(value or "", value)
    assert stream_is_journal(stream, {} if env is None else {"JOURNAL_STREAM": env}) is journal


def test_stream_without_a_file_is_not_the_journal() -> None:
    import io

    assert stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"}) is False


@pytest.mark.parametrize(
    ("fmt", "journal", "shape"),
    [
        ("text", True, r"<4>localvmss\.x: careful"),
        ("text", False, r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING localvmss\.x: careful"),
        ("json", True, r'<4>\{"ts": .*"message": "careful"\}'),
        ("json", False, r'\{"ts": .*"message": "careful"\}'),
    ],
)
def test_configure_logging_formats(
    stream: IO[str], root_restored: None, monkeypatch: pytest.MonkeyPatch, fmt: str, journal: bool, shape: str
) -> None:
    if journal:
        monkeypatch.setenv("JOURNAL_STREAM", journal_env(stream)["JOURNAL_STREAM"])
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging(logging.INFO, fmt, stream=stream)
    logging.getLogger("localvmss.x").warning("careful")
    logging.getLogger("localvmss.x").debug("not shown below INFO")
    stream.flush()
    lines = Path(stream.name).read_text().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(shape, lines[0]), lines[0]
    assert len(logging.getLogger().handlers) == 1


def test_configure_logging_twice_keeps_one_handler(stream: IO[str], root_restored: None) -> None:
    configure_logging(logging.INFO, "text", stream=stream)
    configure_logging(logging.DEBUG, "json", stream=stream)
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger().level == logging.DEBUG


def test_unknown_format_is_one_clear_error() -> None:
    with pytest.raises(InvalidSpec, match="log format 'xml' is unknown; choose one of text, json"):
        make_formatter("xml", journal=False)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {}),
        (
            {"scale_set": "web", "instance": 3, "action": "restart", "reason": "requested"},
            {"scale_set": "web", "instance": 3, "action": "restart", "reason": "requested"},
        ),
        ({"status": 409, "path": "/scaleSets/web"}, {"status": 409, "path": "/scaleSets/web"}),
        ({"odd": {1, 2}}, {"odd": "{1, 2}"}),  # what JSON cannot hold is written as text
    ],
)
def test_json_fields(extra: dict[str, object], expected: dict[str, object]) -> None:
    rec = record(logging.INFO, **extra)
    rec.created = 1764590400.25  # 2025-12-01T12:00:00.250Z
    out = json.loads(make_formatter("json", journal=False).format(rec))
    assert out == {
        "ts": "2025-12-01T12:00:00.250+00:00",
        "level": "INFO",
        "logger": "localvmss.test",
        "message": "hello world",
        **expected,
    }


def _failing_record() -> logging.LogRecord:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        return logging.LogRecord("localvmss.test", logging.ERROR, __file__, 1, "pass failed", (), sys.exc_info())


def test_json_exception_text() -> None:
    out = json.loads(make_formatter("json", journal=False).format(_failing_record()))
    assert out["message"] == "pass failed" and out["level"] == "ERROR"
    assert out["exception"].startswith("Traceback (most recent call last):")
    assert out["exception"].rstrip().endswith("RuntimeError: boom")


@pytest.mark.parametrize("journal", [True, False])
def test_text_exception_every_line_keeps_the_priority(journal: bool) -> None:
    lines = make_formatter("text", journal=journal).format(_failing_record()).split("\n")
    assert lines[-1].endswith("RuntimeError: boom")
    assert any(line.removeprefix("<3>").startswith("Traceback") for line in lines)
    if journal:
        assert all(line.startswith("<3>") for line in lines), lines
    else:
        assert not any(line.startswith("<") for line in lines)


def test_reconcile_pass_errors_are_warnings_and_a_failed_pass_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """What ``journalctl -p warning`` must show of the loop: each distinct set of pass errors
    once at WARNING, a pass that raised at ERROR with its traceback."""
    import threading
    from types import SimpleNamespace

    from localvmss.reconciler import PassReport, Reconciler

    caplog.set_level(logging.DEBUG, logger="localvmss.reconciler")
    stop = threading.Event()
    reports = iter([PassReport(errors=["host h1: listing failed"])] * 2 + [PassReport(errors=[])])

    def pass_once() -> PassReport:
        report = next(reports, None)
        if report is None:
            stop.set()
            raise RuntimeError("boom")
        return report

    loop = SimpleNamespace(
        _wake=SimpleNamespace(clear=lambda: None, wait=lambda _s: None),
        _last_errors=[],
        pass_once=pass_once,
        pass_hook=None,
        cfg=SimpleNamespace(reconcile_interval_s=0.0),
        last_report=None,
    )
    loop._log_errors = lambda errors: Reconciler._log_errors(loop, errors)  # type: ignore[arg-type]
    Reconciler.run(loop, stop)  # type: ignore[arg-type]
    said = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert said == [
        (logging.WARNING, "reconcile: host h1: listing failed", False),  # twice in a row: said once
        (logging.ERROR, "reconcile pass failed", True),
    ]
