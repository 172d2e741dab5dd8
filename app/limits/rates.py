"""Rate settings such as ``20/s`` or ``30/min``: a count per fixed window of a second or minute."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_RATE = re.compile(r"\s*(\d+)\s*/\s*(s|sec|second|m|min|minute)\s*", re.IGNORECASE)
_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}


@dataclass(frozen=True)
class Rate:
    """At most ``count`` hits in each window of ``seconds`` (1 or 60), windows on the clock."""

    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{'s' if self.seconds == 1 else 'min'}"

    @property
    def chunk(self) -> int:
        """Hits a process counts by itself before it adds them to the shared count.

        A twentieth of the limit: at most about twenty shared writes per key and window, and a
        bounded overshoot (see docs/limits.md). Limits of 20 or fewer are shared at every hit.
        """
        return max(1, math.ceil(self.count / 20))

    def window(self, now: float) -> int:
        """The start (Unix seconds) of the window ``now`` falls in."""
        return int(now) - int(now) % self.seconds

    def retry_after(self, now: float) -> int:
        """Whole seconds until the window that holds ``now`` is over (at least 1)."""
        return max(1, math.ceil(self.window(now) + self.seconds - now))


def parse_rate(text: str, variable: str) -> Rate | None:
    """``"20/s"`` or ``"30/min"`` as a Rate; ``"0"`` or empty (no limit) as None.

    Raises ValueError naming ``variable`` when the text is neither.
    """
    if text.strip() in ("", "0"):
        return None
    match = _RATE.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"{variable} must be N/s or N/min with N at least 1, or 0 for no limit; not {text!r}"
        )
    return Rate(int(match.group(1)), _SECONDS[match.group(2).lower()])
