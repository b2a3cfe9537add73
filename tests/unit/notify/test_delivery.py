"""Retries: backoff with jitter, Retry-After honoured, give-up after the receiver's limit, no
retry of an error that cannot pass; the clock and the sleep are fakes."""

from __future__ import annotations

from controller.core.notify import NotifyState, Retry, plan_notifications
from controller.notify.delivery import backoff_s, deliver
from controller.notify.sinks import SendError
from tests.unit.core.notify.factories import EPOCH, make_alert, make_config


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class Failing:
    def __init__(self, errors: list[SendError]) -> None:
        self.errors = errors
        self.calls = 0

    def send(self, _: object) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def notification() -> object:
    _, [n] = plan_notifications(NotifyState(), make_alert(), make_config(), EPOCH)
    return n


def test_backoff_doubles_up_to_its_ceiling_with_the_upper_half_drawn() -> None:
    retry = Retry(initial_backoff_s=1, max_backoff_s=5)

    assert [0.5, 1.0, 2.0, 2.5, 2.5] == [backoff_s(n, retry, lambda: 0.0) for n in range(1, 6)]
    assert 5.0 == backoff_s(9, retry, lambda: 1.0)


def test_a_503_is_retried_after_its_retry_after() -> None:
    t = FakeTime()
    sink = Failing([SendError("HTTP 503", retryable=True, retry_after_s=7)])

    outcome = deliver(sink, notification(), Retry(), clock=t.clock, sleep=t.sleep, draw=lambda: 0)  # type: ignore[arg-type]

    assert ("delivered", 2, [7]) == (outcome.result, outcome.attempts, t.slept)


def test_a_receiver_that_keeps_failing_is_given_up_after_its_limit() -> None:
    t = FakeTime()
    sink = Failing([SendError("HTTP 500", retryable=True) for _ in range(100)])
    retry = Retry(initial_backoff_s=1, max_backoff_s=4, give_up_after_s=20)

    outcome = deliver(sink, notification(), retry, clock=t.clock, sleep=t.sleep, draw=lambda: 1)  # type: ignore[arg-type]

    assert "gave_up" == outcome.result
    assert sum(t.slept) <= 20
    assert "HTTP 500 (given up after" in outcome.error


def test_a_refusal_that_cannot_pass_is_not_retried() -> None:
    sink = Failing([SendError("HTTP 400 Bad Request", retryable=False)])

    outcome = deliver(sink, notification(), Retry())  # type: ignore[arg-type]

    assert ("gave_up", 1) == (outcome.result, outcome.attempts)
