"""Admin actions on the core's data dir, run with no server: users, tokens, backup and restore."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from servermanager.common.settings import load_settings, parse_duration
from servermanager.core.datadir import DB_FILENAME, data_dir, usable_data_dir
from servermanager.core.settings import CoreSettings


def core_settings(args: argparse.Namespace) -> CoreSettings:
    """The core's settings from --config, --data-dir and --listen (where given), env and defaults."""
    return load_settings(
        CoreSettings,
        env_prefix="SM_CORE_",
        config_file=args.config,
        overrides={
            "data_dir": args.data_dir,
            "listen": getattr(args, "listen", None),
            "tls": getattr(args, "tls", None),
            "database": getattr(args, "database", None),
            "bus": getattr(args, "bus", None),
        },
    )


def _admin_core(args: argparse.Namespace) -> Any:
    """Open the core's services on its data dir for one admin action (no server started)."""
    from servermanager.core.auth import EnrollTokens, Users
    from servermanager.core.store.backend import database_for

    settings = core_settings(args)
    folder = usable_data_dir(data_dir(settings))
    db = database_for(settings.database, folder / DB_FILENAME)
    return settings, db, Users, EnrollTokens


def _read_password(args: argparse.Namespace) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("passwords differ")
    return first


def cmd_create_user(args: argparse.Namespace) -> int:
    from servermanager.core.auth import Role

    settings, db, users_cls, _ = _admin_core(args)
    password = _read_password(args)

    async def run() -> int:
        await db.open()
        try:
            from servermanager.core.audit import Audit

            users = users_cls(db, settings.access_token_ttl, settings.refresh_token_ttl)
            await users.create(args.name, password, Role(args.role))
            await Audit(db).record(_actor(), "user.create", f"user:{args.name}", "ok", {"role": args.role})
        finally:
            await db.close()
        return 0

    try:
        asyncio.run(run())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.name!r} created with role {args.role}")
    return 0


def cmd_enroll_token(args: argparse.Namespace) -> int:
    """The token alone on stdout (for scripts); the agent command to copy, with the pin, on stderr."""
    settings, db, _, enroll_cls = _admin_core(args)
    ttl = parse_duration(args.ttl)

    async def run() -> str:
        from servermanager.core.audit import Audit

        await db.open()
        try:
            token = str(await enroll_cls(db).create(ttl, args.uses))
            await Audit(db).record(_actor(), "enroll.create", None, "ok", {"ttl": ttl, "uses": args.uses})
            return token
        finally:
            await db.close()

    token = asyncio.run(run())
    print(token, flush=True)
    print(enroll_command(settings, token, getattr(args, "core_host", None)), file=sys.stderr)
    return 0


def enroll_command(settings: CoreSettings, token: str, host: str | None = None) -> str:
    """What to run on a new server: the agent with the core's URL, the token and, with TLS, the
    certificate's pin; then the one-line installers for a server that has no agent yet."""
    from servermanager.core.install.commands import (
        agent_line,
        linux_line,
        settings_origin,
        settings_pins,
        windows_line,
    )
    from servermanager.core.tls import tls_enabled

    base = settings_origin(settings, host)
    lines = ["On the new server, run (or put the same settings in its agent.toml and agent.env):", ""]
    if not tls_enabled(settings):
        lines += [
            f"  {agent_line(base, token, None)}",
            "",
            f"TLS is off with these settings (listen {settings.listen}, tls {settings.tls}; pass the core's "
            "--config if it has another). Behind a TLS-terminating proxy, give agents the proxy's https:// "
            "URL instead: over plain ws:// the token and the agent's credential cross the network in the clear.",
        ]
        return "\n".join(
            [*lines, *_installer_lines(linux_line(base, token, None), windows_line(base, token, None))]
        )
    pins = settings_pins(settings, data_dir(settings))
    if pins is None:
        lines += [
            f"  {agent_line(base, token, None)} --core-fingerprint sha256:...",
            "",
            "The core has not made its certificate yet (it does on its first start with TLS on): start it, "
            "then `servermanager admin fingerprint` prints the value for --core-fingerprint.",
        ]
        return "\n".join(lines)
    lines += [f"  {agent_line(base, token, pins)}"]
    if settings.tls_cert:
        lines += [
            "",
            f"This pins your own certificate {settings.tls_cert} itself: once it is renewed, agents refuse "
            "the new one until re-pinned. If a CA the agents trust signed it, leave --core-fingerprint out "
            "(or give --ca-file FILE for a private CA).",
        ]
    return "\n".join(
        [*lines, *_installer_lines(linux_line(base, token, pins), windows_line(base, token, pins))]
    )


def _installer_lines(linux: str, windows: str) -> list[str]:
    return [
        "",
        "Or, on a server without the agent, install it from this core in one line. Linux (as a user who may sudo):",
        "",
        f" {linux}",
        "",
        "Windows (in an elevated Windows PowerShell):",
        "",
        f"  {windows}",
    ]


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """The pin of the certificate the core serves: its own tls_cert, or the one it generated."""
    from servermanager.core.tls import current_fingerprint

    settings = core_settings(args)
    pin = current_fingerprint(settings, data_dir(settings))
    if pin is None:
        print(
            f"error: no TLS certificate in {data_dir(settings)} yet; the core makes one on its first start "
            "with TLS on (listening beyond loopback, or tls = on)",
            file=sys.stderr,
        )
        return 1
    print(pin)
    return 0


def cmd_api_token(args: argparse.Namespace) -> int:
    """A script's token belongs to a service user of its own, so its role is its own too."""
    import secrets

    from servermanager.core.auth import Role, TokenKind

    settings, db, users_cls, _ = _admin_core(args)

    async def run() -> str:
        await db.open()
        try:
            users = users_cls(db, settings.access_token_ttl, settings.refresh_token_ttl)
            row = await db.fetchone("SELECT id, role FROM users WHERE name = ?", (args.name,))
            if row is None:
                uid = await users.create(args.name, secrets.token_urlsafe(24), Role(args.role))
            elif row[1] != args.role:
                raise ValueError(f"user {args.name!r} exists with role {row[1]}, not {args.role}")
            else:
                uid = row[0]
            token, _ = await users.issue(uid, TokenKind.API, args.name)
            from servermanager.core.audit import Audit

            await Audit(db).record(_actor(), "token.create", f"token:{args.name}", "ok", {"role": args.role})
            return str(token)
        finally:
            await db.close()

    try:
        print(asyncio.run(run()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _on_postgresql(settings: CoreSettings, verb: str) -> bool:
    """Say so (one line) when the database is PostgreSQL: backup and restore work on the SQLite file,
    which after `admin migrate` is an old copy."""
    if settings.database == "sqlite":
        return False
    from servermanager.core.settings import redact_url

    print(
        f"error: the database is PostgreSQL ({redact_url(settings.database)}); {verb} works on the SQLite "
        "file only: use pg_dump / pg_restore",
        file=sys.stderr,
    )
    return True


def cmd_backup(args: argparse.Namespace) -> int:
    if _on_postgresql(core_settings(args), "backup"):
        return 1
    src = usable_data_dir(data_dir(core_settings(args))) / DB_FILENAME
    if not src.exists():
        print(f"error: no database at {src}", file=sys.stderr)
        return 1
    dest = Path(args.file)
    if dest.is_dir():
        print(f"error: cannot write the backup to {dest}: it is a directory; name a file", file=sys.stderr)
        return 1
    try:
        # Opened first: a path that cannot be written is said before anything is recorded.
        out = sqlite3.connect(dest)
    except sqlite3.Error:
        why = "no such directory" if not dest.parent.is_dir() else "permission denied"
        print(f"error: cannot write the backup to {dest}: {why}", file=sys.stderr)
        return 1
    try:
        # Recorded first, so the backup holds the row that says when and by whom it was taken.
        _audit_sync(src, "admin.backup", {"file": str(dest)})
        # SQLite's online backup copies a consistent snapshot while the core keeps writing.
        with contextlib.closing(sqlite3.connect(src)) as s:
            s.backup(out)
        # One self-contained file: no -wal or -shm appears beside it when it is read (or restored).
        out.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        print(f"error: the backup to {dest} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        out.close()
    os.chmod(dest, 0o600)
    print(f"backup written to {dest}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Copy the data dir's database into PostgreSQL with no core running (the data dir's lock is
    held throughout), then print each table's rows on both sides; 1 when any count differs."""
    from servermanager.common.settings import SettingsError
    from servermanager.core.datadir import DataDirBusy, DataDirLock
    from servermanager.core.settings import parse_database_url, redact_url

    shown = redact_url(args.to)
    try:
        parse_database_url(args.to)
    except SettingsError as exc:
        print(f"error: {str(exc).replace('setting database', '--to')}", file=sys.stderr)
        return 2
    folder = usable_data_dir(data_dir(core_settings(args)))
    src = folder / DB_FILENAME
    if not src.exists():
        print(f"error: no database at {src}", file=sys.stderr)
        return 1
    try:
        with DataDirLock(folder):
            counts = asyncio.run(_migrate(src, args.to, args.force))
    except DataDirBusy as exc:
        print(
            f"error: {exc}; stop it first (systemctl stop servermanager-core), then migrate", file=sys.stderr
        )
        return 1
    except _MigrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"error: cannot read the database {src}: {exc}", file=sys.stderr)
        return 1
    width = max(len(t) for t in counts)
    print(f"{'table':<{width}}  {'sqlite':>10}  {'postgresql':>10}")
    bad = [t for t, (a, b) in counts.items() if a != b]
    for table, (a, b) in counts.items():
        print(f"{table:<{width}}  {a:>10}  {b:>10}{'  MISMATCH' if a != b else ''}")
    if bad:
        print(f"error: row counts differ in {', '.join(bad)}", file=sys.stderr)
        return 1
    print(
        f"copied {sum(a for a, _ in counts.values())} rows into {shown}; every count matches. Start the core "
        f'with database = "{shown}" (the password, if any, from PGPASSWORD or ~/.pgpass)'
    )
    return 0


class _MigrateError(Exception):
    """A migration that cannot go on, in one line."""


async def _migrate(src: Path, url: str, force: bool) -> dict[str, tuple[int, int]]:
    from servermanager.core.settings import redact_url
    from servermanager.core.store.pg import PgDatabase
    from servermanager.core.store.schema import migrate_sync
    from servermanager.core.store.transfer import TargetNotEmpty, copy_sqlite_to_pg

    migrate_sync(src)  # the file at this core's schema, as the core would bring it on start
    db = PgDatabase(url, readers=1)
    try:
        await db.open()
        # Recorded once the target answers, in the file copied: the new database holds the row that
        # says when and by whom.
        _audit_sync(src, "admin.migrate", {"to": redact_url(url)})
        return await copy_sqlite_to_pg(src, db, force=force, say=lambda line: print(line, flush=True))
    except TargetNotEmpty as exc:
        raise _MigrateError(
            f"{redact_url(url)} already holds rows (in {exc}); nothing was copied. Use an empty database, "
            "or --force to replace them"
        ) from None
    except (sqlite3.Error, RuntimeError, OSError) as exc:
        raise _MigrateError(f"migrating into {redact_url(url)} failed, nothing was kept: {exc}") from None
    finally:
        await db.close()


def _audit_sync(db_file: Path, action: str, detail: dict[str, Any]) -> None:
    """An audit row for a CLI action that works on the file itself, not through the store."""
    import json
    import time

    # closing(): a Connection's own `with` only commits, and an open one keeps the -wal file.
    with contextlib.closing(sqlite3.connect(db_file, timeout=10)) as con, con:
        con.execute(
            "INSERT INTO audit (ts, actor, action, target, detail, result) VALUES (?, ?, ?, NULL, ?, 'ok')",
            (time.time(), _actor(), action, json.dumps(detail)),
        )


def cmd_restore(args: argparse.Namespace) -> int:
    """Replace the database with a checked backup, only while no core uses the data dir; the file
    replaced is kept beside it, and the new one gets its owner and mode."""
    from servermanager.core.datadir import DataDirBusy, DataDirLock
    from servermanager.core.store.schema import SCHEMA_VERSION

    if _on_postgresql(core_settings(args), "restore"):
        return 1
    src = Path(args.file)
    problem = _backup_problem(src, SCHEMA_VERSION)
    if problem:
        print(f"error: {src} {problem}; nothing was changed", file=sys.stderr)
        return 1
    folder = usable_data_dir(data_dir(core_settings(args)))
    try:
        # Held through the swap: a core that starts meanwhile waits for nothing, it is refused.
        with DataDirLock(folder):
            kept = _swap_in(src, folder)
    except DataDirBusy as exc:
        print(
            f"error: {exc}; stop it first (systemctl stop servermanager-core), then restore",
            file=sys.stderr,
        )
        return 1
    except (sqlite3.Error, OSError) as exc:
        print(f"error: restore into {folder} failed: {exc}", file=sys.stderr)
        return 1
    was = f"; the database it replaced is kept as {kept}" if kept else ""
    print(f"restored {src} into {folder / DB_FILENAME}{was}; start the core again")
    return 0


def _backup_problem(src: Path, newest: int) -> str | None:
    """What is wrong with a backup file (it is only read), or None when it can be restored."""
    if not src.is_file():
        return "is not a usable backup: no such file"
    try:
        with contextlib.closing(sqlite3.connect(_ro_uri(src), uri=True)) as con:
            ok = con.execute("PRAGMA integrity_check").fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
            has_users = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"is not a usable backup: {exc}"
    if ok != "ok":
        return f"failed its integrity check: {ok}"
    if version > newest:
        return f"has schema {version}, newer than this servermanager's ({newest}): upgrade first"
    if version < 1 or not has_users:
        return "is not a usable backup: not a Server Manager database"
    return None


def _swap_in(src: Path, folder: Path) -> Path | None:
    """Copy `src` beside the database, bring it up to date, then rename it over the database.

    The file replaced is first copied (SQLite's backup, so the WAL's last commits are in it) to
    <db>.before-restore-<UTC time>; that name is returned. Every file made here gets the owner and
    mode of the database it replaces (or of the data dir): a restore run as root must leave the
    service a database its own user can write.
    """
    import time

    from servermanager.core.datadir import match_owner
    from servermanager.core.store.schema import migrate_sync

    dest = folder / DB_FILENAME
    like, mode = (dest, None) if dest.exists() else (folder, 0o600)
    kept: Path | None = None
    if dest.exists():
        kept = folder / f"{DB_FILENAME}.before-restore-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        _sqlite_copy(dest, kept)
        match_owner(kept, like, mode)
    tmp = folder / (DB_FILENAME + ".restore")
    tmp.unlink(missing_ok=True)
    _sqlite_copy(src, tmp, read_only=True)
    migrate_sync(tmp)
    _audit_sync(tmp, "admin.restore", {"file": str(src)})
    with contextlib.closing(sqlite3.connect(tmp)) as con:
        # Back to one file: its -wal and -shm (made by this process's user) go with the last close.
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    match_owner(tmp, like, mode)
    # The old WAL must not outlive its database: SQLite would replay it onto the new file.
    for suffix in ("-wal", "-shm"):
        Path(str(dest) + suffix).unlink(missing_ok=True)
    os.replace(tmp, dest)
    return kept


def _sqlite_copy(src: Path, dest: Path, read_only: bool = False) -> None:
    """SQLite's backup of `src` into `dest`; read_only: `src` is opened read-only (a backup file,
    which may sit where this user cannot write)."""
    source = sqlite3.connect(_ro_uri(src), uri=True) if read_only else sqlite3.connect(src)
    with contextlib.closing(source) as s, contextlib.closing(sqlite3.connect(dest)) as d:
        s.backup(d)
        d.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, as a backup is


def _ro_uri(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


# ---------------------------------------------------------------- accounts (the REST account API's twin)


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _account_action(args: argparse.Namespace, action: str, target: str, work: Any) -> int:
    """Open the data dir, run `work(accounts) -> message`, audit it, print one line; 1 on a refusal."""
    from servermanager.core.accounts import AccountError, Accounts
    from servermanager.core.audit import Audit

    settings, db, users_cls, _ = _admin_core(args)

    async def run() -> tuple[int, str]:
        await db.open()
        try:
            accounts = Accounts(db, users_cls(db, settings.access_token_ttl, settings.refresh_token_ttl))
            try:
                message = await work(accounts)
            except AccountError as exc:
                await Audit(db).record(_actor(), action, target, "refused", {"error": exc.message})
                return 1, f"error: {exc.message}"
            if action:
                await Audit(db).record(_actor(), action, target, "ok")
            return 0, str(message)
        finally:
            await db.close()

    code, message = asyncio.run(run())
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def cmd_passwd(args: argparse.Namespace) -> int:
    """Set a user's password (signs them out everywhere); --temporary makes them change it at sign-in."""
    password = _read_password(args)

    async def work(accounts: Any) -> str:
        user = await accounts.by_name(args.name)
        await accounts.set_password(user.id, password, must_change=args.temporary, keep_session=None)
        return f"password of {args.name!r} set" + (
            " (to be changed at the next sign-in)" if args.temporary else ""
        )

    return _account_action(args, "user.password_reset", f"user:{args.name}", work)


def cmd_users(args: argparse.Namespace) -> int:
    async def work(accounts: Any) -> str:
        rows = [f"{'id':>4}  {'name':<24} {'role':<9} {'state':<9} two-factor"]
        for u in await accounts.all():
            state = "disabled" if u.disabled else ("change pw" if u.must_change_password else "ok")
            rows.append(f"{u.id:>4}  {u.name:<24} {u.role:<9} {state:<9} {'on' if u.totp else 'off'}")
        return "\n".join(rows)

    return _account_action(args, "", "", work)


def _patch(args: argparse.Namespace, action: str, patch: Any, said: str) -> int:
    async def work(accounts: Any) -> str:
        user = await accounts.by_name(args.name)
        await accounts.patch(user.id, patch)
        return f"user {args.name!r}: {said}"

    return _account_action(args, action, f"user:{args.name}", work)


def cmd_set_role(args: argparse.Namespace) -> int:
    from servermanager.common.rest import UserPatch

    return _patch(args, "user.update", UserPatch(role=args.role), f"role is now {args.role}")


def cmd_disable(args: argparse.Namespace) -> int:
    from servermanager.common.rest import UserPatch

    return _patch(args, "user.update", UserPatch(disabled=True), "disabled; signed out everywhere")


def cmd_enable(args: argparse.Namespace) -> int:
    from servermanager.common.rest import UserPatch

    return _patch(args, "user.update", UserPatch(disabled=False), "enabled")


def cmd_reset_2fa(args: argparse.Namespace) -> int:
    from servermanager.common.rest import UserPatch

    return _patch(args, "user.update", UserPatch(totp=False), "two-factor sign-in reset")


def cmd_delete_user(args: argparse.Namespace) -> int:
    async def work(accounts: Any) -> str:
        user = await accounts.by_name(args.name)
        await accounts.delete(user.id)
        return f"user {args.name!r} deleted"

    return _account_action(args, "user.delete", f"user:{args.name}", work)


def cmd_tokens(args: argparse.Namespace) -> int:
    import time as _time

    def when(ts: float | None) -> str:
        return _time.strftime("%Y-%m-%d %H:%M", _time.localtime(ts)) if ts else "never"

    async def work(accounts: Any) -> str:
        uid = (await accounts.by_name(args.user)).id if args.user else None
        rows = [f"{'id':<16}  {'user':<16} {'kind':<8} {'created':<16} {'expires':<16} name"]
        for t in await accounts.tokens(uid):
            rows.append(
                f"{t.id:<16}  {t.user:<16} {t.kind:<8} {when(t.created_at):<16} {when(t.expires_at):<16} {t.name or ''}"
            )
        for e in await accounts.enroll_tokens():
            rows.append(
                f"{e.id:<16}  {'(enrollment)':<16} {'enroll':<8} {when(e.created_at):<16} {when(e.expires_at):<16} {e.uses_left} use(s) left"
            )
        return "\n".join(rows)

    return _account_action(args, "", "", work)


def cmd_revoke(args: argparse.Namespace) -> int:
    import re

    from servermanager.core.accounts import AccountError

    if not re.fullmatch(r"[0-9a-f]{16}", args.id):
        print("error: a token id is 16 lowercase hex digits, as `admin tokens` lists it", file=sys.stderr)
        return 2

    async def work(accounts: Any) -> str:
        try:
            t = await accounts.revoke(args.id, None)
            return f"revoked {t.kind} token {args.id} of {t.user!r}" + (
                " and the rest of its sign-in" if t.session else ""
            )
        except AccountError:
            await accounts.revoke_enroll(args.id)  # raises AccountError(404) when it is neither
            return f"revoked enrollment token {args.id}"

    return _account_action(args, "token.revoke", f"token:{args.id}", work)
