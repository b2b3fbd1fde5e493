"""The calendar edges every date-dependent piece of the project is tested on.

``CALENDAR_EDGES`` is one list of instants (São Paulo wall time, with the UTC day noted where
it differs); ``pinned_clock`` travels the whole test process there with time-machine, the
simulators included (they run in threads of the test process). Use it as::

    @pytest.mark.parametrize("instant", CALENDAR_EDGES, ids=EDGE_IDS)
    def test_something(instant): ...
        with pinned_clock(instant): ...

The clock ticks from the pinned instant (``tick=True``) so timeouts and retry loops behave;
a test that needs a frozen clock passes ``tick=False``. PostgreSQL's ``now()`` is not moved:
date logic must take "today" from Python and hand it to SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import time_machine

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def _sp(*args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SAO_PAULO, fold=fold)


# id -> São Paulo wall time. Brazil has had no DST since 2019, so today UTC = SP + 3 h.
_EDGES: dict[str, dt.datetime] = {
    "1st-of-month": _sp(2026, 12, 1, 10, 0),
    "2nd-of-month": _sp(2027, 1, 2, 10, 0),
    "3rd-of-month": _sp(2026, 12, 3, 10, 0),
    "last-of-month-30": _sp(2026, 11, 30, 10, 0),
    "last-of-month-31": _sp(2026, 10, 31, 10, 0),
    # New Year's Eve late evening: the UTC day is already 1 January.
    "31dec-2330-sp": _sp(2026, 12, 31, 23, 30),
    "1jan-0030-sp": _sp(2027, 1, 1, 0, 30),
    "28feb-non-leap": _sp(2027, 2, 28, 12, 0),
    "28feb-leap": _sp(2028, 2, 28, 12, 0),
    "29feb-leap": _sp(2028, 2, 29, 12, 0),
    # Mid-month, UTC on the next day (23:30 SP = 02:30 UTC) and the reverse at 00:30.
    "15th-2330-sp": _sp(2026, 7, 15, 23, 30),
    "16th-0030-sp": _sp(2026, 7, 16, 0, 30),
    # Month end at 23:30 SP: the UTC month has already turned.
    "30jun-2330-sp": _sp(2026, 6, 30, 23, 30),
}

CALENDAR_EDGES: list[dt.datetime] = list(_EDGES.values())
EDGE_IDS: list[str] = list(_EDGES)

# Historical Brazilian DST, for data that carries such times (old Tiny orders, old chats) and
# for "today" logic run on such a day: 2018-11-04 00:00 jumped to 01:00 (UTC-2);
# 2019-02-16 23:00-23:59 happened twice (fold=1 is the second pass, UTC-3).
DST_EDGES: list[dt.datetime] = [
    _sp(2018, 11, 4, 1, 30),
    _sp(2019, 2, 16, 23, 30, fold=0),
    _sp(2019, 2, 16, 23, 30, fold=1),
]
DST_IDS: list[str] = [
    "dst-start-2018-11-04",
    "dst-end-2019-02-16-first",
    "dst-end-2019-02-16-second",
]
# The few instants a slow (whole-project) test runs on: the 1st and 2nd of a month, where a
# month key equals a day key, and New Year's Eve in São Paulo (already 1 January in UTC).
MONTH_BOUNDARY_EDGES: list[dt.datetime] = [
    _EDGES["1st-of-month"],
    _EDGES["2nd-of-month"],
    _EDGES["31dec-2330-sp"],
]
MONTH_BOUNDARY_IDS: list[str] = ["1st-of-month", "2nd-of-month", "31dec-2330-sp"]


@contextmanager
def pinned_clock(instant: dt.datetime, *, tick: bool = True) -> Iterator[time_machine.Coordinates]:
    """Run the block with ``datetime.now()``, ``date.today()`` and ``time.time()`` at ``instant``."""
    assert instant.tzinfo is not None, "pin the clock to an aware instant"
    # Travel to the instant in UTC: given a ZoneInfo datetime, time-machine would also switch
    # the process's local zone to São Paulo and hide every date.today() a UTC server runs.
    with time_machine.travel(instant.astimezone(dt.UTC), tick=tick) as traveller:
        yield traveller


def sao_paulo_today(instant: dt.datetime) -> dt.date:
    return instant.astimezone(SAO_PAULO).date()


def utc_today(instant: dt.datetime) -> dt.date:
    return instant.astimezone(dt.UTC).date()
