"""File reading on real files: tails within limits, follows across appends, rotation, truncation and floods."""

from __future__ import annotations

from pathlib import Path

from servermanager.agent.logread.files import Follower, tail


def test_tail_keeps_the_newest_lines_within_the_limits(tmp_path: Path) -> None:
    f = tmp_path / "a.log"
    f.write_bytes(b"".join(b"line %d\n" % i for i in range(1, 101)) + b"no newline yet")
    got = tail(str(f), 3, 4096)
    assert got.lines == ["line 99", "line 100", "no newline yet"] and not got.truncated
    got = tail(str(f), 1000, 50)
    assert got.truncated and "max_bytes_per_request = 50" in (got.note or "")
    assert got.lines[-1] == "no newline yet" and sum(len(x) + 1 for x in got.lines) <= 50
    assert tail(str(f), 3, 4096, match="line 7").lines == ["line 77", "line 78", "line 79"]
    assert tail(str(f), 10, 4096, end=len(b"line 1\nline 2\n")).lines == ["line 1", "line 2"]
    (tmp_path / "bin.log").write_bytes(b"\xff\xfe bad utf-8\r\n")
    assert tail(str(tmp_path / "bin.log"), 1, 4096).lines == ["\ufffd\ufffd bad utf-8"]


def follower(path: Path) -> Follower:
    return Follower(str(path), str(path), lambda p: p)


def test_follow_sees_appends_partial_lines_rotation_and_truncation(tmp_path: Path) -> None:
    f = tmp_path / "app.log"
    f.write_text("old\n")
    fw = follower(f)
    try:
        assert fw.poll(1 << 16).lines == []  # starts at the end
        with f.open("a") as fh:
            fh.write("one\ntw")
        assert fw.poll(1 << 16).lines == ["one"]
        with f.open("a") as fh:
            fh.write("o\n")
        assert fw.poll(1 << 16).lines == ["two"]
        # logrotate: rename, recreate; a last line written to the old file is not lost.
        with f.open("a") as fh:
            fh.write("last of old\n")
        f.rename(tmp_path / "app.log.1")
        f.write_text("first of new\n")
        got = fw.poll(1 << 16)
        assert got.lines == ["last of old", "first of new"]
        assert any("rotated" in n for n in got.notes)
        # copytruncate: the file shrinks below what was read.
        f.write_text("x\n")
        got = fw.poll(1 << 16)
        assert got.lines == ["x"] and any("truncated" in n for n in got.notes)
    finally:
        fw.close()


def test_follow_cuts_a_flood_at_the_budget(tmp_path: Path) -> None:
    f = tmp_path / "flood.log"
    f.write_text("")
    fw = follower(f)
    try:
        with f.open("a") as fh:
            fh.write("".join(f"flood {i:06d}\n" for i in range(100_000)))  # 1.3 MB
        got = fw.poll(1000)
        assert got.skipped > 1_000_000
        assert sum(len(x) + 1 for x in got.lines) <= 1000
        assert got.lines[0] == "flood 000000"
        with f.open("a") as fh:
            fh.write("calm again\n")
        assert fw.poll(1000).lines == ["calm again"]  # nothing of the flood is queued up
    finally:
        fw.close()
