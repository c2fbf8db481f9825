"""The release workflow (.github/workflows/release.yml): its shape and the files it uses (actionlint was run on it by hand)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
ACTIONS = {
    "actions/checkout@v4",
    "actions/setup-python@v5",
    "actions/upload-artifact@v4",
    "actions/download-artifact@v4",
    "softprops/action-gh-release@v2",
}


def workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    return loaded


def steps(job: str) -> list[dict[str, Any]]:
    return list(workflow()["jobs"][job]["steps"])


def runs(job: str) -> str:
    return "\n".join(step.get("run", "") for step in steps(job))


def test_a_version_tag_starts_it() -> None:
    # PyYAML reads the key `on` as True (YAML 1.1).
    assert workflow()[True] == {"push": {"tags": ["v*"]}}


def test_every_action_is_a_known_major_version() -> None:
    used = {step["uses"] for job in workflow()["jobs"] for step in steps(job) if "uses" in step}
    assert used <= ACTIONS, sorted(used - ACTIONS)


def test_each_system_builds_and_self_tests_its_bundle() -> None:
    assert "python -m build" in runs("linux") and "packaging/build.py --only desktop" in runs("linux")
    for job in ("linux", "windows", "macos"):
        assert "desktop" in runs(job) and "--self-test" in runs(job), job
    # The .debs are built in the release they are for, whose python3 their venvs are made with.
    assert workflow()["jobs"]["debs"]["container"] == "debian:12"
    assert "packaging/build.py --only deb" in runs("debs") and "lintian --fail-on error" in runs("debs")
    assert "iscc " in runs("windows") and "packaging\\windows\\servermanager.iss" in runs("windows")
    assert "hdiutil create" in runs("macos")


def test_the_release_job_publishes_what_the_others_uploaded() -> None:
    jobs = workflow()["jobs"]
    assert set(jobs["release"]["needs"]) == {"debs", "linux", "windows", "macos"}
    assert jobs["release"]["permissions"] == {"contents": "write"}
    assert workflow()["permissions"] == {"contents": "read"}
    uploads = [
        s
        for job in ("debs", "linux", "windows", "macos")
        for s in steps(job)
        if "upload-artifact" in s.get("uses", "")
    ]
    assert all(s["with"]["if-no-files-found"] == "error" for s in uploads) and len(uploads) == 4
    (download,) = [s for s in steps("release") if "download-artifact" in s.get("uses", "")]
    (publish,) = [s for s in steps("release") if "action-gh-release" in s.get("uses", "")]
    assert publish["with"]["files"] == f"{download['with']['path']}/*"


def test_the_inno_setup_script_has_a_start_menu_entry_and_an_uninstaller() -> None:
    iss = (REPO / "packaging" / "windows" / "servermanager.iss").read_text()
    assert re.search(r'^Name: "\{group\}\\Server Manager"; Filename: "\{app\}\\\{#AppExe\}"', iss, re.M)
    assert re.search(r'^Name: "\{group\}\\Uninstall Server Manager"; Filename: "\{uninstallexe\}"', iss, re.M)
    assert '#define AppExe "servermanager-desktop.exe"' in iss
    # The spec names the executable the installer starts.
    spec = (REPO / "packaging" / "desktop" / "servermanager-desktop.spec").read_text()
    assert 'NAME = "servermanager-desktop"' in spec
