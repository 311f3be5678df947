"""The worker's retry policies (tenacity): what is retried, what is not, and when waiting stops."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from ganforge.worker.runner import with_db_retry


def _flaky(failures: list[BaseException]):
    calls = []

    def call():
        calls.append(time.monotonic())
        if failures:
            raise failures.pop(0)
        return "ok"
    return call, calls


def test_a_dropped_database_connection_is_retried_until_it_answers():
    call, calls = _flaky([OperationalError("select", {}, Exception("gone"))] * 2)
    assert with_db_retry(call, budget_seconds=5) == "ok"
    assert len(calls) == 3
    assert calls[1] - calls[0] == pytest.approx(0.2, abs=0.15)  # backoff starts at 0.2 s and doubles
    assert calls[2] - calls[1] == pytest.approx(0.4, abs=0.15)


def test_an_error_that_is_not_the_connection_is_raised_at_once():
    call, calls = _flaky([IntegrityError("insert", {}, Exception("duplicate"))])
    with pytest.raises(IntegrityError):
        with_db_retry(call, budget_seconds=5)
    assert len(calls) == 1


def test_the_budget_ends_the_waiting_with_the_databases_own_error():
    call, calls = _flaky([OperationalError("select", {}, Exception("gone"))] * 50)
    started = time.monotonic()
    with pytest.raises(OperationalError):
        with_db_retry(call, budget_seconds=0.5)
    # 0.2 + 0.4 would pass the budget: one wait of 0.2 s, never a sleep past the deadline.
    assert time.monotonic() - started < 0.5
    assert len(calls) == 2
