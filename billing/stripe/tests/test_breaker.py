"""The circuit breaker in front of Stripe (billing/stripe/breaker.py), on a clock the test moves."""

from __future__ import annotations

import pytest

from billing.stripe.breaker import CLOSED, HALF_OPEN, OPEN, BreakerOpen, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[tuple[str, str, str]]) -> CircuitBreaker:
    return CircuitBreaker(
        name="stripe",
        fail_max=3,
        reset_seconds=30,
        clock=clock,
        on_state_change=lambda *change: changes.append(change),
    )


def test_outages_in_a_row_open_it_and_an_answer_in_between_resets_the_count(
    breaker: CircuitBreaker, changes: list[tuple[str, str, str]]
) -> None:
    # given two outages, then an answer (a declined card), then two more
    breaker.outage(breaker.enter())
    breaker.outage(breaker.enter())
    breaker.answered(breaker.enter())
    breaker.outage(breaker.enter())
    breaker.outage(breaker.enter())
    assert (breaker.state, breaker.fail_counter) == (CLOSED, 2)

    # when a third in a row fails
    breaker.outage(breaker.enter())

    # then it is open and refuses, saying when to come back
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.enter()
    assert refused.value.retry_after == 30
    assert changes == [("stripe", CLOSED, OPEN)]


def test_after_the_reset_time_one_trial_passes_and_its_success_closes_it(
    breaker: CircuitBreaker, clock: Clock, changes: list[tuple[str, str, str]]
) -> None:
    # given an open breaker, 10 s later: Retry-After counts down
    for _ in range(3):
        breaker.outage(breaker.enter())
    clock.now += 10
    assert breaker.retry_after() == 20

    # when the reset time has passed
    clock.now += 20
    trial = breaker.enter()

    # then one trial passes, a second caller is refused while it runs, and its success closes it
    assert breaker.state == HALF_OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.enter()
    assert refused.value.retry_after == 1
    breaker.success(trial)
    assert (breaker.state, breaker.fail_counter) == (CLOSED, 0)
    breaker.success(breaker.enter())
    assert changes == [("stripe", CLOSED, OPEN), ("stripe", OPEN, HALF_OPEN), ("stripe", HALF_OPEN, CLOSED)]


def test_a_failed_trial_opens_it_again_for_the_whole_reset_time(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    # given a half-open breaker
    for _ in range(3):
        breaker.outage(breaker.enter())
    clock.now += 30

    # when its trial fails
    breaker.outage(breaker.enter())

    # then it is open again for 30 s
    assert breaker.state == OPEN
    assert breaker.retry_after() == 30


def test_a_trial_that_tells_nothing_lets_the_next_caller_try(breaker: CircuitBreaker, clock: Clock) -> None:
    # given a half-open breaker whose trial ended on our own error
    for _ in range(3):
        breaker.outage(breaker.enter())
    clock.now += 30
    breaker.abandoned(breaker.enter())

    # when the next caller comes, then it is the new trial
    breaker.success(breaker.enter())
    assert breaker.state == CLOSED


def test_calls_run_side_by_side_and_slow_ones_are_counted(breaker: CircuitBreaker, clock: Clock) -> None:
    # given three calls in flight at once (none waits for another)
    first, second = breaker.enter(), breaker.enter()
    clock.now += 4
    third = breaker.enter()
    clock.now += 2

    # then two have waited more than 5 s, and none once they end
    assert breaker.slow_calls(older_than=5) == 2
    breaker.outage(first)
    breaker.outage(second)
    breaker.success(third)
    assert breaker.slow_calls(older_than=5) == 0
    assert (breaker.state, breaker.fail_counter) == (CLOSED, 0)


def test_close_resets_everything(breaker: CircuitBreaker, changes: list[tuple[str, str, str]]) -> None:
    breaker.enter()  # still in flight
    for _ in range(3):
        breaker.outage(breaker.enter())

    breaker.close()

    assert (breaker.state, breaker.fail_counter, breaker.slow_calls(older_than=-1)) == (CLOSED, 0, 0)
    assert changes[-1] == ("stripe", OPEN, CLOSED)
