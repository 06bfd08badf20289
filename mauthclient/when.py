"""Times on mauthctl's command line (`mauthctl audit --since/--until`), as Unix seconds.

Strategy: accept what an operator types at a shell and nothing ambiguous.

* An age, counted back from now: a whole number and a unit, `30s`, `30m`,
  `1h`, `2d`, `1w`.
* A date or a date and time in ISO 8601: `2026-12-07` (midnight),
  `2026-12-07T10:00`, `2026-12-07 10:00:30`, in local time (the time the
  audit table shows) unless an offset is written (`2026-12-07T10:00Z`,
  `+01:00`).
* Unix seconds, as the API answers them (`1796630400`, `1796630400.5`).

Anything else is a `ValueError` whose message is one sentence naming the
option, for the command line to print.
"""

from __future__ import annotations

import datetime
import math
import re

_AGE = re.compile(r"(\d{1,9})\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NUMBER = re.compile(r"\d+(\.\d+)?")


def parse_when(text: str, *, now: float, option: str = "time") -> float:
    """`text` (an age, an ISO 8601 date or time, or Unix seconds) as Unix seconds; `now` for the ages."""
    t = text.strip()
    age = _AGE.fullmatch(t)
    if age:
        return now - int(age.group(1)) * _UNIT[age.group(2)]
    if _NUMBER.fullmatch(t):
        value = float(t)
        if math.isfinite(value):
            return value
    try:
        moment = datetime.datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"{option} {text!r} is not a time: give a date (2026-12-07), a date and time"
                         " (2026-12-07T10:00) or an age (30m, 1h, 2d)") from None
    return moment.timestamp()  # a naive time is local time
