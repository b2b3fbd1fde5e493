"""The Tiny circuit breaker: stop a run after N consecutive calls that failed after retries.

Each API call already retries 429/5xx/network errors with backoff (lib/http). A call that
still fails is recorded (an order in ``import_failures``) and the run moves on, which is
right for one bad order but wrong when Tiny itself is down: the run would hammer the API
with every remaining order, each call with its full retry budget. So the sync layer counts
consecutive calls that failed with a transient error (5xx, 429, timeout, connection); any
reply from Tiny, even a 404 for one order, resets the count. At the threshold it raises
``CircuitOpen``; the sync function adds where the next run resumes and re-raises it, having
written nothing of the interrupted page.
"""

from __future__ import annotations

from ..lib.http import HttpError, TransientHttpError
from ..lib.redact import redact

THRESHOLD_VAR = "TINY_CIRCUIT_BREAKER_FAILURES"
DEFAULT_THRESHOLD = 5


class CircuitOpen(RuntimeError):
    """Tiny failed ``failures`` calls in a row; the run stopped early, nothing half-written."""

    def __init__(self, failures: int, last_error: str, last_status: int | None) -> None:
        self.failures = failures
        self.last_error = last_error
        self.last_status = last_status
        self.resume_hint = ""
        self.result = None  # the sync's counts up to the stop, set by the sync function
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        last = f"{self.last_status} " if self.last_status else ""
        text = (
            f"Tiny API failing: {self.failures} consecutive errors, last: {last}{self.last_error}"
        )
        return f"{text}; {self.resume_hint}" if self.resume_hint else text

    def resumes(self, hint: str, result: object = None) -> CircuitOpen:
        """Attach where the next run picks up (and the counts so far); returns self to raise."""
        self.resume_hint = hint
        self.result = result
        self.args = (self.reason,)
        return self


class CircuitBreaker:
    """Counts consecutive failed calls of one sync; ``failed`` raises at the threshold."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD) -> None:
        if threshold < 1:
            raise ValueError(f"{THRESHOLD_VAR} must be at least 1, got {threshold}")
        self.threshold = threshold
        self.consecutive = 0
        self.total_failures = 0

    def succeeded(self) -> None:
        self.consecutive = 0

    def failed(self, error: HttpError) -> None:
        """Record a call that failed after its retries; raise ``CircuitOpen`` at the threshold."""
        if not isinstance(error, TransientHttpError):
            # Tiny answered (a 4xx for this one request): the API is up.
            self.succeeded()
            return
        self.consecutive += 1
        self.total_failures += 1
        if self.consecutive >= self.threshold:
            raise CircuitOpen(self.consecutive, _short(error), error.status)


def _short(error: HttpError) -> str:
    # The error's message is already redacted; keep the first line, without the URL's query.
    text = redact(str(error)).splitlines()[0] if str(error) else type(error).__name__
    return text[:300]
