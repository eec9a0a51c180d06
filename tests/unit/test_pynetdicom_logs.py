"""pynetdicom's exception logs (peer input it cannot decode) in one line each."""

from __future__ import annotations

import logging

import pytest

from node.services.pynetdicom_guard import one_line_pynetdicom_errors


def log_exception(name: str) -> None:
    try:
        raise ValueError("Unable to decode '31 2E E9' using the ascii codec(s)")
    except ValueError as exc:
        logging.getLogger(name).error("Unable to decode the received PDU data")
        logging.getLogger(name).exception(exc)


def test_exception_records_become_one_line(caplog: pytest.LogCaptureFixture) -> None:
    one_line_pynetdicom_errors()
    one_line_pynetdicom_errors()  # idempotent: one filter per logger
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    log_exception("pynetdicom.dul")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Unable to decode the received PDU data",
        "ValueError: Unable to decode '31 2E E9' using the ascii codec(s)",
    ]
    assert "Traceback" not in caplog.text
    assert len(logging.getLogger("pynetdicom.dul").filters) == 1


def test_tracebacks_stay_when_pynetdicom_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    one_line_pynetdicom_errors()
    caplog.set_level(logging.DEBUG, logger="pynetdicom")
    log_exception("pynetdicom.dul")
    assert "Traceback" in caplog.text
