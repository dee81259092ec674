"""The chaos run's result: one row per check, printed as one table. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    goal: str
    measured: str
    passed: bool


def failed(scenario: str, goal: str, why: str) -> Row:
    """The row of a scenario that could not measure its goal (timed out, raised)."""
    return Row(scenario, goal, why, False)


def render(rows: Sequence[Row], title: str) -> str:
    """A plain-text table (no wrapping: each cell on one line), then the overall verdict."""
    header = ("scenario", "goal", "measured", "result")
    cells = [(row.scenario, row.goal, row.measured, "PASS" if row.passed else "FAIL") for row in rows]
    widths = [max(len(line[i]) for line in (header, *cells)) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return " | ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    verdict = "PASS" if rows and all(row.passed for row in rows) else "FAIL"
    body = [title, line(header), rule, *(line(cells_row) for cells_row in cells), rule]
    failures = sum(not row.passed for row in rows)
    body.append(f"{verdict}: {len(rows) - failures}/{len(rows)} checks passed")
    return "\n".join(body)


def per_minute(lines: int, window_seconds: float) -> float:
    """Log lines per minute of an outage. An outage shorter than a minute counts as one minute: the notice that a
    dependency is down is one line whatever the outage lasts, and 1 line in 10 s is not "6 lines a minute"."""
    return lines * 60.0 / max(window_seconds, 60.0)
