"""Calendar arithmetic the measures need: ages in whole months and years, and due dates.

Ages follow CQL's AgeInYearsAt/AgeInMonthsAt: a year (or month) is complete once the
birthday's month and day are reached, so someone born on 29 February turns a year older
on 1 March in a common year. Due dates follow CQL date arithmetic instead: adding months
keeps the day of the month and clamps it to the month's last day (2024-02-29 + 1 year is
2025-02-28).
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def age_in_months(birth_date: date, on: date) -> int:
    """Whole months completed between birth and `on` (negative before birth)."""
    months = (on.year - birth_date.year) * 12 + on.month - birth_date.month
    if on.day < birth_date.day:
        months -= 1
    return months


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _MONTH_DAYS[month - 1]


@lru_cache(maxsize=65536)
def add_months(day: date, months: int) -> date:
    """`day` moved by `months` (negative goes back), the day clamped to the month's end."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, _days_in_month(year, month)))


def season_start(day: date, start_month: int) -> date:
    """First day of the season (a year that starts on the 1st of `start_month`) holding `day`."""
    year = day.year if day.month >= start_month else day.year - 1
    return date(year, start_month, 1)
