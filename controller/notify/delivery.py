"""Delivering one notification with retries: exponential backoff with jitter on errors that
can pass (HTTP 429 and 5xx, connection errors, SMTP 4xx), the receiver's Retry-After honoured,
and a give-up after the receiver's `retry.give_up_after`; an error that cannot pass (another
4xx, an SMTP 5xx) gives up at once. The clock, the sleep and the random draw are arguments.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from controller.core.notify import Notification, Retry
from controller.notify.sinks import SendError, Sink


@dataclass(frozen=True)
class Outcome:
    #: interrupted: the notifier is stopping; the notification stays owed (not committed)
    result: Literal["delivered", "gave_up", "interrupted"]
    attempts: int
    error: str = ""


def backoff_s(attempt: int, retry: Retry, draw: Callable[[], float]) -> float:
    """Attempt n's pause (n from 1): initial * 2^(n-1), at most max, the upper half drawn at
    random (so receivers that fail together are not retried together)."""
    ceiling = min(retry.max_backoff_s, retry.initial_backoff_s * 2.0 ** (attempt - 1))
    return float(ceiling / 2 + draw() * ceiling / 2)


def deliver(
    sink: Sink,
    notification: Notification,
    retry: Retry,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
    on_retry: Callable[[int, SendError, float], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> Outcome:
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            sink.send(notification)
            return Outcome("delivered", attempt)
        except SendError as exc:
            if not exc.retryable:
                return Outcome("gave_up", attempt, f"{exc} (not retried)")
            pause = backoff_s(attempt, retry, draw)
            if exc.retry_after_s is not None:
                pause = max(pause, exc.retry_after_s)
            if clock() + pause - start > retry.give_up_after_s:
                return Outcome(
                    "gave_up",
                    attempt,
                    f"{exc} (given up after {attempt} attempts in {clock() - start:.1f} s)",
                )
            if stopping():
                return Outcome("interrupted", attempt, f"{exc} (stopping)")
            if on_retry is not None:
                on_retry(attempt, exc, pause)
            sleep(pause)
