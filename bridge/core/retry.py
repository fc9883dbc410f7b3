"""What an attempt's outcome means for an outbox entry (pure).

- Transient (network, timeout, 5xx, 429, login): try again after a capped exponential backoff
  with jitter; 429's `Retry-After` is honoured.
- Permanent (business rules, validation): dead-letter, with the reason.
- An unknown outcome the MES may still be working on (a timeout, a lost answer, a proxy's
  502/504) is not checked before `settle_s`: a trace read earlier could miss a request that the
  MES records a moment later, and the resend would be a second record.
- After an unknown outcome the next attempt asks the MES (`MesClient.recorded`) whether it holds
  the request; only when it does not is the request sent again, so a refusal then (a duplicate
  PASS, an already converted WIP) is the MES's answer to this request, not proof of an earlier
  delivery.
- The MES is offline on evidence, not on one failure: `Outage` counts failures in a row across
  every lane (a single reset connection at 5 % lost answers is not an outage).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.core.outbox import Entry
from bridge.mes.errors import MesError, MesErrorCode


@dataclass(frozen=True)
class RetryPolicy:
    min_s: float
    max_s: float

    def delay(self, attempts: int, jitter: float) -> float:
        """Seconds before attempt `attempts + 1`; `jitter` in [0, 1) spreads retries of many
        entries so that they do not all hit a recovering MES at the same moment."""
        # The exponent stops growing long before the cap matters (2**30 > any max_s / min_s).
        ceiling = min(self.max_s, self.min_s * 2.0 ** min(max(attempts - 1, 0), 30))
        return ceiling * (0.5 + jitter / 2)


@dataclass(frozen=True)
class Retry:
    at: datetime


@dataclass(frozen=True)
class GiveUp:
    error: MesError


def after_failure(
    entry: Entry,
    error: MesError,
    *,
    policy: RetryPolicy,
    now: datetime,
    jitter: float,
    settle_s: float,
) -> Retry | GiveUp:
    if not error.retryable:
        return GiveUp(error)
    delay = policy.delay(entry.attempts, jitter)
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    if error.unsettled:
        delay = max(delay, settle_s)
    return Retry(at=now + timedelta(seconds=delay))


# Failures that say nothing answered (or could not): evidence of an outage, not a refusal.
OFFLINE_CODES = {MesErrorCode.NETWORK, MesErrorCode.TIMEOUT, MesErrorCode.SERVER}


@dataclass
class Outage:
    """Whether the MES is down, judged from evidence: `threshold` failed attempts in a row,
    whichever lanes made them. Any answer from the MES resets the count."""

    threshold: int
    failures: int = 0

    def failed(self) -> bool:
        """One more failure; True once they are enough to call the MES offline."""
        self.failures += 1
        return self.failures >= self.threshold

    def answered(self) -> None:
        self.failures = 0
