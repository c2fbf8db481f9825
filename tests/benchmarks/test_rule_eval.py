"""benchmarks/rule_eval.py runs: every kind's rules load, evaluate without firing, and print a ratio."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import rule_eval


async def test_it_prints_a_row_per_kind(capsys: pytest.CaptureFixture[str]) -> None:
    await rule_eval.main(argparse.Namespace(rules=10, samples=20, rounds=1))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| scalar", "| series", "| dev", "| container", "| gpu"]
    assert rows[0].endswith("| 1.00x |")


@pytest.mark.parametrize("kind", ["scalar", "series", "dev", "container", "gpu"])
def test_each_kind_has_distinct_valid_selectors(kind: str) -> None:
    from servermanager.common.itemmetrics import ITEM_PREFIXES, item_metric

    chosen = rule_eval.selectors(kind, 10)
    assert len(chosen) == 10
    for metric in chosen:
        if metric.startswith(ITEM_PREFIXES):
            item_metric(metric)  # raises on a name the rules would refuse
