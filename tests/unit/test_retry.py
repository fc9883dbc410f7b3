"""bridge.core.retry: backoff, retry or give up, and a refused resend that proves delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.core.domain import Result
from bridge.core.outbox import Entry
from bridge.core.retry import (
    GiveUp,
    Outage,
    Retry,
    RetryPolicy,
    after_failure,
)
from bridge.mes.errors import MesError, MesErrorCode
from bridge.mes.models import CompleteProcess, ConvertToSerial, MesRequest, StartProcess

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(min_s=1.0, max_s=120.0)

START = StartProcess(wip_id="WIP-1", process=2, operator_id=7, started_at=T0)
PASS = CompleteProcess(
    wip_id="WIP-1",
    process=2,
    operator_id=7,
    result=Result.PASS,
    started_at=T0,
    completed_at=T0 + timedelta(minutes=1),
)
FAIL = PASS.model_copy(update={"result": Result.FAIL})
REWORK = PASS.model_copy(update={"result": Result.REWORK})
CONVERT = ConvertToSerial(wip_id="WIP-1", operator_id=7)


def entry(request: MesRequest = START, *, attempts: int = 1, maybe_applied: bool = False) -> Entry:
    return Entry(
        seq=1,
        request=request,
        station_id="s1",
        batch_id="B1",
        enqueued_at=T0,
        attempts=attempts,
        maybe_applied=maybe_applied,
    )


# -- RetryPolicy.delay ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "attempts", "jitter", "expected"),
    [
        (POLICY, 0, 0.0, 0.5),
        (POLICY, 1, 0.0, 0.5),
        (POLICY, 2, 0.0, 1.0),
        (POLICY, 3, 0.0, 2.0),
        (POLICY, 4, 0.0, 4.0),
        (POLICY, 7, 0.0, 32.0),
        (POLICY, 8, 0.0, 60.0),
        (POLICY, 9, 0.0, 60.0),
        (POLICY, 50, 0.0, 60.0),
        (POLICY, 1, 0.5, 0.75),
        (POLICY, 3, 0.5, 3.0),
        (POLICY, 8, 0.5, 90.0),
        (RetryPolicy(min_s=2.0, max_s=10.0), 1, 0.0, 1.0),
        (RetryPolicy(min_s=2.0, max_s=10.0), 3, 0.0, 4.0),
        (RetryPolicy(min_s=2.0, max_s=10.0), 4, 0.0, 5.0),
        (RetryPolicy(min_s=5.0, max_s=5.0), 1, 0.0, 2.5),
        (RetryPolicy(min_s=5.0, max_s=5.0), 30, 0.5, 3.75),
    ],
    ids=[
        "never-tried",
        "first-retry-half-min",
        "doubles",
        "doubles-again",
        "doubles-thrice",
        "64-halved",
        "capped-128-to-120",
        "capped",
        "capped-far",
        "jitter-half-first",
        "jitter-half-doubled",
        "jitter-half-capped",
        "other-policy-first",
        "other-policy-doubled",
        "other-policy-capped",
        "min-equals-max",
        "min-equals-max-many-attempts",
    ],
)
def test_delay(policy: RetryPolicy, attempts: int, jitter: float, expected: float) -> None:
    assert policy.delay(attempts, jitter) == pytest.approx(expected)


@pytest.mark.parametrize("attempts", [1, 2, 5, 7, 8, 20])
def test_jitter_near_one_gives_the_full_ceiling(attempts: int) -> None:
    ceiling = min(POLICY.max_s, POLICY.min_s * 2 ** (attempts - 1))
    assert POLICY.delay(attempts, 0.999999) == pytest.approx(ceiling, rel=1e-5)
    assert POLICY.delay(attempts, 0.999999) < ceiling


@pytest.mark.parametrize("attempts", [0, 1, 2, 6, 7, 8, 9, 30, 60, 1000])
@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.75, 0.999999])
def test_delay_is_never_above_max_nor_below_half_min(attempts: int, jitter: float) -> None:
    delay = POLICY.delay(attempts, jitter)
    assert POLICY.min_s / 2 <= delay <= POLICY.max_s


def test_delay_grows_with_attempts_until_capped() -> None:
    delays = [POLICY.delay(attempts, 0.3) for attempts in range(1, 12)]
    assert delays == sorted(delays)
    assert delays[-1] == delays[-2] == pytest.approx(120.0 * 0.65)


@pytest.mark.parametrize("attempts", [1025, 1100, 10_000])
def test_delay_stays_capped_after_very_many_attempts(attempts: int) -> None:
    assert POLICY.delay(attempts, 0.5) == pytest.approx(90.0)


# -- after_failure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "attempts", "jitter", "seconds"),
    [
        (MesError(MesErrorCode.NETWORK), 1, 0.0, 0.5),
        (MesError(MesErrorCode.TIMEOUT, maybe_applied=True), 2, 0.0, 1.0),
        (MesError(MesErrorCode.SERVER, status=500), 3, 0.5, 3.0),
        (MesError(MesErrorCode.AUTH, status=401), 9, 0.0, 60.0),
        (MesError(MesErrorCode.RATE_LIMITED, status=429), 1, 0.0, 0.5),
        (MesError(MesErrorCode.RATE_LIMITED, status=429, retry_after=30), 1, 0.0, 30.0),
        (MesError(MesErrorCode.RATE_LIMITED, status=429, retry_after=0.2), 3, 0.0, 2.0),
        (MesError(MesErrorCode.RATE_LIMITED, status=429, retry_after=300), 9, 0.999, 300.0),
        (MesError(MesErrorCode.SERVER, status=503, retry_after=10), 1, 0.0, 10.0),
        (MesError(MesErrorCode.RATE_LIMITED, status=429, retry_after=0), 1, 0.0, 0.5),
    ],
    ids=[
        "network",
        "timeout",
        "server-with-jitter",
        "auth-capped",
        "rate-limited-without-retry-after",
        "retry-after-longer-honoured",
        "retry-after-shorter-ignored",
        "retry-after-beyond-max-honoured",
        "retry-after-on-503",
        "retry-after-zero",
    ],
)
def test_retryable_failure_is_retried_later(
    error: MesError, attempts: int, jitter: float, seconds: float
) -> None:
    decision = after_failure(
        entry(attempts=attempts), error, policy=POLICY, now=T0, jitter=jitter, settle_s=0
    )
    assert isinstance(decision, Retry)
    assert (decision.at - T0).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize(
    "code",
    [
        MesErrorCode.WIP_NOT_FOUND,
        MesErrorCode.PREREQUISITE_NOT_MET,
        MesErrorCode.INVALID_WIP_STATUS,
        MesErrorCode.DUPLICATE_PASS,
        MesErrorCode.INCOMPLETE_PROCESSES,
        MesErrorCode.ALREADY_CONVERTED,
        MesErrorCode.PROCESS_NOT_STARTED,
        MesErrorCode.VALIDATION,
        MesErrorCode.CONFLICT,
    ],
    ids=lambda code: str(code),
)
def test_permanent_failure_gives_up_with_the_error(code: MesErrorCode) -> None:
    error = MesError(code, status=400, retry_after=5)
    decision = after_failure(entry(), error, policy=POLICY, now=T0, jitter=0.5, settle_s=75)
    assert decision == GiveUp(error)
    assert isinstance(decision, GiveUp) and decision.error is error


# -- an unknown outcome waits until the MES cannot still be working on it ------------------------


@pytest.mark.parametrize(
    ("error", "seconds"),
    [
        (MesError(MesErrorCode.TIMEOUT, unsettled=True), 75.0),  # a read timeout
        (MesError(MesErrorCode.NETWORK, unsettled=True), 75.0),  # a connection lost after sending
        (MesError(MesErrorCode.SERVER, status=504, unsettled=True), 75.0),  # the proxy gave up
        (MesError(MesErrorCode.SERVER, status=500, maybe_applied=True), 0.5),  # the MES answered
        (MesError(MesErrorCode.NETWORK), 0.5),  # never reached the MES
        (MesError(MesErrorCode.RATE_LIMITED, retry_after=90, unsettled=True), 90.0),
    ],
    ids=["timeout", "dropped", "proxy-504", "mes-500", "refused-connect", "longer-retry-after"],
)
def test_an_unsettled_outcome_is_not_checked_before_settle_s(
    error: MesError, seconds: float
) -> None:
    decision = after_failure(entry(), error, policy=POLICY, now=T0, jitter=0.0, settle_s=75)
    assert isinstance(decision, Retry)
    assert (decision.at - T0).total_seconds() == pytest.approx(seconds)


# -- offline on evidence ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "offline_after"),
    [
        ("f", []),  # one lost answer is not an outage
        ("ff", []),
        ("fff", [3]),
        ("fafaf", []),  # 5 % lost answers: every answer in between resets the count
        ("ffaff", []),
        ("ffaffff", [6, 7]),
        ("ffff", [3, 4]),
    ],
)
def test_the_mes_is_offline_after_failures_in_a_row(seen: str, offline_after: list[int]) -> None:
    outage = Outage(threshold=3)
    offline = []
    for step, what in enumerate(seen, start=1):
        if what == "a":
            outage.answered()
        elif outage.failed():
            offline.append(step)
    assert offline == offline_after
