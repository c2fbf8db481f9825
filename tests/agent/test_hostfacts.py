"""Host facts against this machine, and the version the agent reports."""

from __future__ import annotations

import msgspec
import psutil

from servermanager.agent.hostfacts import agent_version, host_facts
from servermanager.common import __version__
from servermanager.common.metrics import HostFacts
from servermanager.common.protocol import Hello, encode


def test_host_facts_are_filled_in() -> None:
    facts = host_facts()
    assert isinstance(facts, HostFacts)
    for field in ("hostname", "os", "os_version", "kernel", "arch", "cpu_model", "agent_version"):
        value = getattr(facts, field)
        assert isinstance(value, str) and value.strip(), field
    assert facts.cpu_count == psutil.cpu_count()
    assert facts.mem_total == psutil.virtual_memory().total
    assert facts.agent_version == agent_version()
    hello = Hello(protocol=1, host=facts)
    assert msgspec.json.decode(encode(hello))["host"]["hostname"] == facts.hostname


def test_agent_version_is_the_package_version() -> None:
    assert agent_version() == __version__
