"""Business hours for dedicated seats that are not 7x24, on the Chinese official calendar.

How this works: a calendar has opening hours for a working day and for a rest day (usually
none), and says whether it follows the official calendar. Which kind a date is: a date the admin
listed as closed is closed all day; a date listed as open is a working day; otherwise, following
the official calendar, the State Council's holidays are rest days and its make-up working days
(调休, on a Saturday or Sunday) are working days (the ``chinesecalendar`` package's data);
without it, or for a year the package has no data for yet (the State Council publishes the next
year's dates late in the year), Monday to Friday are working days — logged once per year, so an
admin can list that year's holidays by hand until the package is updated.

Pure: ``is_open(calendar, local_datetime)``; no I/O. Times are local wall-clock times in the
centre's time zone; a range is [start, end) and may not cross midnight (give two ranges).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Annotated

import chinese_calendar
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger("hotline.ivr.hours")

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")
_warned_years: set[int] = set()


def _time(text: str) -> dt.time:
    if text == "24:00":
        return dt.time.max
    return dt.time.fromisoformat(text)


class Calendar(BaseModel):
    """A business-hours calendar, as the HTTP API takes it and Postgres keeps it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]
    workday: list[tuple[str, str]] = Field(default_factory=lambda: [("08:30", "17:30")], max_length=8)
    restday: list[tuple[str, str]] = Field(default_factory=list, max_length=8)
    official_holidays: bool = True
    closed_dates: list[dt.date] = Field(default_factory=list, max_length=400)
    open_dates: list[dt.date] = Field(default_factory=list, max_length=400)

    @field_validator("workday", "restday")
    @classmethod
    def _ranges(cls, ranges: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for start, end in ranges:
            for t in (start, end):
                if not _HHMM.match(t):
                    raise ValueError(f"{t!r} is not a time of day HH:MM (00:00 to 24:00)")
            if _time(end) <= _time(start):
                raise ValueError(f"range {start}-{end} ends before it starts (split a range across midnight in two)")
        return ranges

    @model_validator(mode="after")
    def _dates(self) -> "Calendar":
        both = set(self.closed_dates) & set(self.open_dates)
        if both:
            raise ValueError(f"{min(both).isoformat()} is listed both as closed and as open")
        return self


def is_working_day(calendar: Calendar, day: dt.date) -> bool:
    if day in calendar.open_dates:
        return True
    if calendar.official_holidays:
        try:
            return chinese_calendar.is_workday(day)
        except NotImplementedError:
            if day.year not in _warned_years:
                _warned_years.add(day.year)
                log.warning("no official calendar data for %d: Monday to Friday are working days "
                            "(list that year's holidays as closed dates, or update chinesecalendar)", day.year)
    return day.weekday() < 5


def is_open(calendar: Calendar, local: dt.datetime) -> bool:
    """Whether the calendar's seats are open at this local wall-clock time."""
    day = local.date()
    if day in calendar.closed_dates:
        return False
    ranges = calendar.workday if is_working_day(calendar, day) else calendar.restday
    now = local.time().replace(tzinfo=None)
    return any(_time(start) <= now < _time(end) for start, end in ranges)
