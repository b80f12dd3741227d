"""A clock a test moves by hand, standing in for a module's ``time`` (only ``monotonic``)."""

from __future__ import annotations


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now
