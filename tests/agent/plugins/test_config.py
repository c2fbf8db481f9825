"""[[custom]], [[scrape]] and [[check]] in the agent's config: loaded with durations, bad entries refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from servermanager.agent.settings import load_agent_settings
from servermanager.common.settings import SettingsError


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + text)
    return load_agent_settings(config_file=config, environ={})


def test_entries_load_with_durations(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
[[custom]]
name = "queue"
command = ["/bin/sh", "-c", "echo queue_depth 3"]
interval = "30s"
timeout = "5s"

[[scrape]]
name = "db"
url = "http://127.0.0.1:9187/metrics"
timeout = 2
metrics = ["pg_up"]

[[check]]
name = "web"
type = "http"
target = "https://example.org/health"
interval = "1m"
timeout = "10s"
body_match = "ok"
""",
    )
    assert (s.custom[0].interval, s.custom[0].timeout) == (30.0, 5.0)
    assert s.scrape[0].metrics == ["pg_up"] and s.check[0].interval == 60.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[custom]]\nname = "q"\ncommand = ["/bin/true"]\n', "custom 'q': timeout is required"),
        (
            '[[custom]]\nname = "q"\ncommand = ["/nonexistent/plugin"]\ntimeout = 1\n',
            "custom 'q': /nonexistent/plugin is not an executable file",
        ),
        ('[[custom]]\nname = "q"\ncommand = []\ntimeout = 1\n', "command must be a non-empty list"),
        (
            '[[custom]]\nname = "q"\ncommand = ["/bin/true"]\ntimeout = "2m"\ninterval = "1m"\n',
            "timeout (120s) must not exceed interval (60s)",
        ),
        (
            '[[scrape]]\nname = "x"\nurl = "http://10.1.2.3:9100/metrics"\ntimeout = 1\n',
            "url host '10.1.2.3' is not loopback",
        ),
        ('[[scrape]]\nname = "x"\nurl = "ftp://127.0.0.1/m"\ntimeout = 1\n', "is not an http(s):// URL"),
        (
            '[[check]]\nname = "w"\ntype = "http"\ntarget = "not a url"\ntimeout = 1\n',
            "check 'w': target 'not a url' is not an http:// or https:// URL",
        ),
        (
            '[[check]]\nname = "w"\ntype = "http"\ntarget = "http://127.0.0.1:99999/"\ntimeout = 1\n',
            "check 'w': target 'http://127.0.0.1:99999/'",
        ),
        ('[[check]]\nname = "t"\ntype = "tcp"\ntarget = "db.internal"\ntimeout = 1\n', "is not host:port"),
        (
            '[[check]]\nname = "w"\ntype = "http"\ntarget = "http://x/"\ntimeout = 1\nbody_match = "("\n',
            "body_match is not a regular expression",
        ),
        ('[[check]]\nname = "w"\ntype = "dns"\ntarget = "x"\ntimeout = 1\n', "invalid setting"),
        (
            '[[check]]\nname = "a"\ntype = "tcp"\ntarget = "h:1"\ntimeout = 1\n'
            '[[check]]\nname = "a"\ntype = "tcp"\ntarget = "h:2"\ntimeout = 1\n',
            "[[check]] name 'a' is used twice",
        ),
    ],
)
def test_bad_entries_are_precise_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(tmp_path, text)
    assert message in str(info.value)
