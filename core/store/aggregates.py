"""SQL expressions of a metric's rounding and of merging rollup rows, shared by rollups and history."""

from __future__ import annotations

from servermanager.common.metrics import FIELD_DECIMALS


def rounded(field: str, expr: str) -> str:
    """expr rounded to the field's FIELD_DECIMALS: what rollups store and merged points show."""
    return f"round({expr}, {FIELD_DECIMALS[field]})"


def merged(field: str, table: str = "") -> tuple[str, str, str]:
    """avg, min and max of rollup rows merged into one: each row's mean weighted by its sample
    count, so the merged mean is exact (the 1h rollup and history's `points` both use it), then
    rounded to the field's decimals."""
    t = table
    return (
        rounded(
            field,
            f"sum({t}{field}_avg * {t}cnt) / nullif(sum(CASE WHEN {t}{field}_avg IS NULL THEN 0 ELSE {t}cnt END), 0)",
        ),
        rounded(field, f"min({t}{field}_min)"),
        rounded(field, f"max({t}{field}_max)"),
    )
