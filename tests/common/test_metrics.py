"""The metric table and what derives from it in the contract: columns, decimals, the wire struct."""

from __future__ import annotations

import msgspec
import pytest

from servermanager.common import metrics as mt
from servermanager.common.metric_table import Family, Field, Unit


def test_every_row_of_the_table_is_a_scalar_field_in_table_order() -> None:
    assert tuple(f.name for f in mt.FIELDS) == mt.SCALAR_FIELDS
    assert mt.FIELD_DECIMALS["cpu_pct"] == 2 and mt.FIELD_DECIMALS["net_rx_bps"] == 0
    # Every row is either sent on the wire (a field of Metrics) or derived from what is sent.
    for f in mt.FIELDS:
        assert f.name in mt.Metrics.__struct_fields__ or f.name in mt.DERIVED, f.name


def test_chart_families_are_drawn_in_their_order_with_one_unit_each() -> None:
    assert [f.name for f in mt.family_fields("memory")] == ["mem_pct", "swap_pct"]
    assert [f.legend_text for f in mt.family_fields("load")] == ["1 min", "5 min", "15 min"]
    assert all(mt.family_fields(fam.key) for fam in mt.FAMILIES)  # no empty chart


def test_scalar_reads_sent_and_derived_rows() -> None:
    m = mt.Metrics(
        cpu_pct=12.5, cpu_per_core=[12.5], load1=0.5, load5=0.4, load15=0.3, mem_total=100, mem_used=50,
        mem_pct=50.0, swap_total=0, swap_used=0, swap_pct=0.0, uptime=10.0, procs=3,
        disks=[mt.DiskUsage("/", "ext4", 10, 4, 40.0), mt.DiskUsage("/data", "xfs", 10, 9, 90.0)],
    )  # fmt: skip
    assert mt.scalar(m, "cpu_pct") == 12.5
    assert mt.scalar(m, "disk_pct") == 90.0 == m.disk_pct  # the fullest mount
    assert mt.scalar(m, "net_rx_bps") is None


def test_round_scalars_keeps_each_rows_decimals() -> None:
    got = mt.round_scalars({"cpu_pct": 12.3456, "net_rx_bps": 1234.5678, "uptime": 99.6, "disks": []})
    assert got == {"cpu_pct": 12.35, "net_rx_bps": 1235, "uptime": 100, "disks": []}
    assert isinstance(got["net_rx_bps"], int)


def test_a_row_that_is_no_builtin_field_becomes_an_optional_wire_field() -> None:
    extra = Field("runq", Unit.PLAIN, 2, "Run queue", "Runnable tasks", family="load")
    cls = mt.metrics_struct((*mt.FIELDS, extra))
    assert issubclass(cls, mt.MetricsBase) and "runq" not in mt.Metrics.__struct_fields__
    assert "runq" in cls.__struct_fields__
    sample = msgspec.json.decode(
        b'{"cpu_pct":1,"cpu_per_core":[],"load1":0,"load5":0,"load15":0,"mem_total":1,"mem_used":0,'
        b'"mem_pct":0,"swap_total":0,"swap_used":0,"swap_pct":0,"uptime":1,"procs":1,"runq":2.5}',
        type=cls,
    )
    assert mt.scalar(sample, "runq") == 2.5
    # Omitted when unknown, so an agent without the row's collector sends what it sent before.
    assert b"runq" not in msgspec.json.encode(msgspec.structs.replace(sample, runq=None))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ((Field("cpu_pct", Unit.PERCENT, 2, "a", "b"),) * 2, "twice"),
        ((Field("Bad-Name", Unit.PLAIN, 2, "a", "b"),), "lower-case identifiers"),
        ((Field("x", Unit.PLAIN, -1, "a", "b"),), "decimals"),
        ((Field("x", Unit.PLAIN, 0, "a", "b", family="nope"),), "no chart family 'nope'"),
        (
            (
                Field("x", Unit.PLAIN, 0, "a", "b", family="f"),
                Field("y", Unit.BYTES, 0, "a", "b", family="f"),
            ),
            "mixes units",
        ),
    ],
)
def test_a_broken_table_is_refused_at_import(rows: tuple[Field, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mt.check_table(rows, (Family("f", "F"),))
