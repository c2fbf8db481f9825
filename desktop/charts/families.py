"""Which charts a node view draws: one per family of the metric table, its rows as the series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from servermanager.common.metrics import FAMILIES, FIELDS, Family, Field, Unit


@dataclass(frozen=True)
class ChartFamily:
    """One chart: a title, the scalar fields it draws (with their legend labels) and their unit."""

    key: str
    title: str
    fields: tuple[str, ...]
    labels: tuple[str, ...]
    unit: Unit

    def __post_init__(self) -> None:
        if len(self.fields) != len(self.labels):
            raise ValueError("one label per field")


def chart_families(
    rows: Sequence[Field] = FIELDS, families: Sequence[Family] = FAMILIES
) -> tuple[ChartFamily, ...]:
    """A chart per family that has rows, in the families' order; its series in table order."""
    out = []
    for fam in families:
        members = [f for f in rows if f.family == fam.key]
        if not members:
            continue
        units = {f.unit for f in members}
        if len(units) > 1:
            # One y axis per chart: a family mixing units would draw one of them on the wrong scale.
            raise ValueError(f"chart family {fam.key!r} mixes units: {sorted(units)}")
        out.append(
            ChartFamily(
                fam.key,
                fam.title,
                tuple(f.name for f in members),
                tuple(f.legend_text for f in members),
                members[0].unit,
            )
        )
    return tuple(out)


DEFAULT_FAMILIES: tuple[ChartFamily, ...] = chart_families()
