"""CHANGELOG.md: Keep a Changelog's shape, and a rename table for /metrics that matches what the core exports."""

from __future__ import annotations

import re
from pathlib import Path

from servermanager.common import __version__
from servermanager.common.metrics import FIELDS_BY_NAME
from servermanager.core.http.prometheus import family_name

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()
# The metric table's rows in 0.1.0, which exported each as sm_node_<row name>: a fact of that
# release, frozen here, so the renames it owes its users can be checked against today's names.
ROWS_0_1_0 = (
    "cpu_pct", "load1", "load5", "load15", "mem_pct", "mem_used", "swap_pct", "disk_pct",
    "disk_read_bps", "disk_write_bps", "disk_read_iops", "disk_write_iops", "net_rx_bps", "net_tx_bps",
    "procs", "uptime",
)  # fmt: skip


def test_keep_a_changelog_shape() -> None:
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d\d-\d\d))?$", CHANGELOG, re.MULTILINE)
    assert headings[0] == ("Unreleased", "")
    released = [version for version, _ in headings[1:]]
    assert __version__ in released and all(date for _, date in headings[1:])
    sections = set(re.findall(r"^### (\w+)$", CHANGELOG, re.MULTILINE))
    assert sections <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_every_renamed_metric_is_listed_with_its_new_name() -> None:
    listed = dict(re.findall(r"^\s*\| `(sm_node_\w+)` \| `(sm_node_\w+)` \|$", CHANGELOG, re.MULTILINE))
    renamed = {
        f"sm_node_{name}": family_name(FIELDS_BY_NAME[name])
        for name in ROWS_0_1_0
        if f"sm_node_{name}" != family_name(FIELDS_BY_NAME[name])
    }
    assert listed == renamed
