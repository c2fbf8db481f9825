"""The generated polkit rule, run in a real JavaScript engine, decides as the agent's own [exec] policy does."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from servermanager.agent.exec import polkit
from servermanager.agent.exec.services import systemd_unit
from servermanager.agent.settings import ExecSettings
from servermanager.common.exec_policy import Policy
from tests.helpers.procs import cli

MANAGE_UNITS = "org.freedesktop.systemd1.manage-units"
# polkit's own API as rules see it: polkit.addRule, polkit.Result, action.id/lookup(), subject.user.
# Only this thin shim stands in for polkitd (which needs the system bus); the rule itself runs as is.
HARNESS = """
var rules = [];
var polkit = {
    Result: {NO: "no", YES: "yes", AUTH_ADMIN: "auth_admin", NOT_HANDLED: null},
    addRule: function (rule) { rules.push(rule); }
};
%s
var cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
var out = cases.map(function (c) {
    var action = {id: c.id, lookup: function (key) { return c.details[key]; }};
    var subject = {user: c.user};
    for (var i = 0; i < rules.length; i++) {
        var r = rules[i](action, subject);
        if (r !== null && r !== undefined) { return r; }
    }
    return null;
});
process.stdout.write(JSON.stringify(out));
"""


def node() -> str:
    found = shutil.which("node") or shutil.which("nodejs")
    if not found:
        pytest.fail("node is needed to run the generated polkit rule (Debian: apt-get install nodejs)")
    return found


def decide(rule: str, cases: list[dict[str, object]]) -> list[str | None]:
    proc = subprocess.run(
        [node(), "-e", HARNESS % rule], input=json.dumps(cases), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    result: list[str | None] = json.loads(proc.stdout)
    return result


def case(
    verb: str, unit: str, user: str = polkit.DEFAULT_USER, action: str = MANAGE_UNITS
) -> dict[str, object]:
    return {"id": action, "user": user, "details": {"verb": verb, "unit": unit}}


def exec_settings(allow: list[str], deny: list[str] | None = None, enabled: bool = True) -> ExecSettings:
    s = ExecSettings(enabled=enabled, allow=allow, deny=deny or [])
    s.validate()
    return s


def test_the_rule_grants_exactly_the_allowed_service_actions() -> None:
    rule = polkit.render_rule(
        exec_settings(
            ["service restart nginx", "service start app-*", "service * worker@*"], ["service * worker@evil*"]
        )
    )
    cases = {
        ("restart", "nginx.service"): "yes",
        ("stop", "nginx.service"): None,  # only restart is allowed for nginx
        ("start", "app-web.service"): "yes",
        ("stop", "app-web.service"): None,
        ("stop", "worker@1.service"): "yes",
        ("restart", "worker@evil1.service"): None,  # deny wins
        ("restart", "sshd.service"): None,
        ("restart", "nginx.socket"): None,
    }
    got = decide(rule, [case(v, u) for v, u in cases])
    assert dict(zip(cases, got, strict=True)) == cases


def test_other_users_actions_and_verbs_fall_through() -> None:
    rule = polkit.render_rule(exec_settings(["*"]))
    got = decide(
        rule,
        [
            case("restart", "nginx.service"),
            case("restart", "nginx.service", user="alice"),
            case("restart", "nginx.service", action="org.freedesktop.systemd1.manage-unit-files"),
            case("reload", "nginx.service"),  # not an agent action: systemctl reload is never sent
            {"id": MANAGE_UNITS, "user": polkit.DEFAULT_USER, "details": {"verb": "start"}},  # no unit
        ],
    )
    assert got == ["yes", None, None, None, None]


def test_exec_off_grants_nothing() -> None:
    rule = polkit.render_rule(exec_settings(["*"], enabled=False))
    assert decide(rule, [case("restart", "nginx.service"), case("start", "a.service")]) == [None, None]


def test_another_user_name_is_the_one_granted() -> None:
    rule = polkit.render_rule(exec_settings(["service restart nginx"]), user="monitor")
    got = decide(rule, [case("restart", "nginx.service", user="monitor"), case("restart", "nginx.service")])
    assert got == ["yes", None]


def test_pattern_characters_stay_literal_in_javascript() -> None:
    # Regex syntax and quotes in a pattern are plain characters to the glob, and must be to the rule.
    rule = polkit.render_rule(
        exec_settings(["service restart a.b+c(1)", 'service stop "q"\\x', "service start [ab]?z"])
    )
    got = decide(
        rule,
        [
            case("restart", "a.b+c(1).service"),
            case("restart", "axbbc(1).service"),
            case("stop", '"q"\\x.service'),
            case("start", "a1z.service"),
            case("start", "c1z.service"),
        ],
    )
    assert got == ["yes", None, "yes", "yes", None]


def test_the_rule_agrees_with_the_agents_policy() -> None:
    allow = ["service restart web-*", "service st* db?", "service * cache.service", "service stop [!x]*"]
    deny = ["service * web-admin*", "service stop db1"]
    policy = Policy(allow, deny, windows=False)
    names = [
        "web-1",
        "web-admin",
        "db1",
        "db2",
        "dbx",
        "cache",
        "cache.service",
        "xeon",
        "yak",
        "web-1.timer",
    ]
    cases, expected = [], []
    for verb in polkit.VERBS:
        for name in names:
            # What the agent allows for the name an operator typed, polkit must allow for its unit.
            unit = systemd_unit(name)
            agent_ok = any(
                policy.check(f"service {verb} {n}") is None
                for n in {name, unit, unit.removesuffix(".service")}
                if systemd_unit(n) == unit
            )
            cases.append(case(verb, unit))
            expected.append("yes" if agent_ok else None)
    assert decide(polkit.render_rule(exec_settings(allow, deny)), cases) == expected
    assert "yes" in expected and None in expected  # the sample covers both answers


def test_install_writes_a_world_readable_file_once(tmp_path: Path) -> None:
    text = polkit.render_rule(exec_settings(["service restart nginx"]))
    os.umask(0o077)
    try:
        assert polkit.install_rule(text, tmp_path) is True
    finally:
        os.umask(0o022)
    path = tmp_path / polkit.RULE_FILE
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # polkitd reads it as its own user
    before = path.stat().st_mtime_ns
    assert polkit.install_rule(text, tmp_path) is False  # unchanged: not rewritten, no polkit reload
    assert path.stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == [polkit.RULE_FILE]  # no temporary file left


def test_cli_prints_the_rule_for_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[exec]\nenabled = true\nallow = ["service restart nginx"]\n')
    r = cli("polkit-rule", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert r.stdout == polkit.render_rule(exec_settings(["service restart nginx"]), source=str(config))
    assert decide(r.stdout, [case("restart", "nginx.service")]) == ["yes"]


def test_cli_install_into_a_rules_dir(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[exec]\nenabled = true\nallow = ["service restart nginx"]\n')
    rules = tmp_path / "rules.d"
    rules.mkdir()
    r = cli("polkit-rule", "--config", str(config), "--install", "--rules-dir", str(rules))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    rule = (rules / polkit.RULE_FILE).read_text()
    assert '// [exec] allow: ["service restart nginx"]' in rule
    assert decide(rule, [case("restart", "nginx.service"), case("stop", "nginx.service")]) == ["yes", None]


def test_cli_install_without_polkit_says_so_once_it_matters(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    missing = tmp_path / "no-polkit"
    config.write_text("[exec]\nenabled = false\n")
    r = cli("polkit-rule", "--config", str(config), "--install", "--rules-dir", str(missing))
    assert (r.returncode, r.stderr) == (0, "")  # nothing would use polkit: nothing to say
    config.write_text('[exec]\nenabled = true\nallow = ["service restart nginx"]\n')
    r = cli("polkit-rule", "--config", str(config), "--install", "--rules-dir", str(missing))
    assert r.returncode == 0
    assert r.stderr.count("\n") == 1 and "polkit is not installed" in r.stderr
    assert not missing.exists()


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[exec]\nallow = [""]\n')
    r = cli("polkit-rule", "--config", str(config))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "exec.allow" in r.stderr and "Traceback" not in r.stderr
