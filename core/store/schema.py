"""The database's tables: versioned migrations, plus the metric columns the metric table names."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from servermanager.common.metrics import SCALAR_FIELDS

log = logging.getLogger(__name__)

# Resolution -> (table, bucket width in ms).
ROLLUP_TABLES = {"1m": ("samples_1m", 60_000), "1h": ("samples_1h", 3_600_000)}


def _rollup_table(name: str) -> str:
    cols = ",\n    ".join(f"{f}_avg REAL, {f}_min REAL, {f}_max REAL" for f in SCALAR_FIELDS)
    return f"""
CREATE TABLE {name} (
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    cnt INTEGER NOT NULL,
    {cols},
    PRIMARY KEY (node_id, ts)
) WITHOUT ROWID;"""


_RAW_COLS = ",\n    ".join(f"{f} REAL" for f in SCALAR_FIELDS)

# Append only: a released migration never changes, a newer core adds one at the end.
MIGRATIONS: list[str] = [
    # 1: users, tokens, nodes, samples and their rollups
    f"""
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    pw_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT,
    expires_at REAL,
    created_at REAL NOT NULL
);
CREATE TABLE enroll_tokens (
    hash BLOB PRIMARY KEY,
    expires_at REAL NOT NULL,
    uses_left INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    cred_hash BLOB NOT NULL UNIQUE,
    host TEXT,
    created_at REAL NOT NULL,
    last_seen REAL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    spool_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE samples_raw (
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    {_RAW_COLS},
    detail BLOB,
    PRIMARY KEY (node_id, ts)
) WITHOUT ROWID;
{_rollup_table("samples_1m")}
{_rollup_table("samples_1h")}
CREATE TABLE rollup_dirty (
    res TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (res, node_id, ts)
) WITHOUT ROWID;
""",
    # 2: audit trail of every mutating action
    """
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    result TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit(ts);
CREATE INDEX tokens_user ON tokens(user_id);
""",
    # 3: remote commands and their per-node runs, output included
    """
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    targets TEXT NOT NULL,
    expires_at REAL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX commands_created ON commands(created_at);
CREATE TABLE command_runs (
    command_id TEXT NOT NULL REFERENCES commands(id) ON DELETE CASCADE,
    node_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    duration REAL,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    services TEXT,
    finished_at REAL,
    PRIMARY KEY (command_id, node_id)
) WITHOUT ROWID;
CREATE INDEX audit_target ON audit(target);
""",
    # 4: the head of the raw series, in arrival (time) order; see SampleStore.settle
    f"""
CREATE TABLE samples_head (
    ts INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    {_RAW_COLS},
    detail BLOB,
    PRIMARY KEY (ts, node_id)
) WITHOUT ROWID;
""",
    # 5: alerting: channels, rules, alerts with every transition, silences, and the durable outbox
    # of notifications (written in the transaction of the transition it announces)
    """
CREATE TABLE channels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
CREATE TABLE alert_rules (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    rule_id INTEGER NOT NULL,
    rule TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    node TEXT NOT NULL,
    metric TEXT NOT NULL,
    op TEXT NOT NULL,
    threshold REAL NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    value REAL,
    peak REAL,
    started_at REAL NOT NULL,
    fired_at REAL,
    resolved_at REAL,
    acked_by TEXT,
    acked_at REAL
);
CREATE INDEX alerts_open ON alerts(state) WHERE state != 'resolved';
CREATE INDEX alerts_started ON alerts(started_at);
CREATE INDEX alerts_node ON alerts(node_id, started_at);
CREATE TABLE alert_transitions (
    alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    value REAL
);
CREATE INDEX alert_transitions_alert ON alert_transitions(alert_id, ts);
CREATE TABLE silences (
    id INTEGER PRIMARY KEY,
    rule_id INTEGER,
    node_id INTEGER,
    grp TEXT,
    tag TEXT,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    comment TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX silences_ends ON silences(ends_at);
CREATE TABLE alert_deliveries (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    sent_at REAL,
    last_error TEXT,
    UNIQUE (alert_id, channel_id, status, created_at)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries(next_attempt_at) WHERE state IN ('pending', 'retrying');
""",
    # 6: node ids never reused (AUTOINCREMENT, above any id ever stored anywhere), token families
    # (a login's access and refresh tokens, and every rotation of them) and spent refresh tokens.
    """
CREATE TABLE nodes_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    cred_hash BLOB NOT NULL UNIQUE,
    host TEXT,
    created_at REAL NOT NULL,
    last_seen REAL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    spool_dropped INTEGER NOT NULL DEFAULT 0
);
INSERT INTO nodes_new (id, name, grp, tags, cred_hash, host, created_at, last_seen, last_seq, spool_dropped)
    SELECT id, name, grp, tags, cred_hash, host, created_at, last_seen, last_seq, spool_dropped FROM nodes;
DROP TABLE nodes;
ALTER TABLE nodes_new RENAME TO nodes;
DELETE FROM sqlite_sequence WHERE name = 'nodes';
INSERT INTO sqlite_sequence (name, seq) SELECT 'nodes', coalesce(max(x), 0) FROM (
    SELECT max(id) AS x FROM nodes
    UNION ALL SELECT max(node_id) FROM samples_raw
    UNION ALL SELECT max(node_id) FROM samples_head
    UNION ALL SELECT max(node_id) FROM samples_1m
    UNION ALL SELECT max(node_id) FROM samples_1h
    UNION ALL SELECT max(node_id) FROM command_runs
    UNION ALL SELECT max(node_id) FROM alerts
    UNION ALL SELECT max(node_id) FROM silences
    UNION ALL SELECT max(CAST(substr(target, 6) AS INTEGER)) FROM audit WHERE target LIKE 'node:%'
);
ALTER TABLE tokens ADD COLUMN family TEXT;
ALTER TABLE tokens ADD COLUMN spent_at REAL;
CREATE INDEX tokens_family ON tokens(family);
""",
    # 7: incident snapshots, one per fired alert: the agent's IncidentSnapshot as JSON and its
    # summary for notifications, or why there is none; they go with their alert
    """
CREATE TABLE alert_snapshots (
    alert_id INTEGER PRIMARY KEY REFERENCES alerts(id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    body TEXT,
    summary TEXT,
    error TEXT
);
""",
    # 8: the account lifecycle: disabled users, a password that must be changed, two-factor
    # (TOTP secret and one-time recovery codes), the session's last step-up; and the highest alert id
    # ever given, so a pruned or dropped alert's id is never given again
    """
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
CREATE TABLE recovery_codes (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash BLOB NOT NULL,
    PRIMARY KEY (user_id, hash)
);
ALTER TABLE tokens ADD COLUMN stepped_up_at REAL;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) SELECT 'alerts', coalesce(max(id), 0) FROM alerts;
""",
    # 9: rule, channel and silence ids never reused either (AUTOINCREMENT, above any id stored or
    # audited): a new rule must not inherit a deleted one's alert history, flap count or silences
    """
CREATE TABLE channels_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
INSERT INTO channels_new (id, name, kind, config, enabled, created_at) SELECT id, name, kind, config, enabled, created_at FROM channels;
DROP TABLE channels;
ALTER TABLE channels_new RENAME TO channels;
DELETE FROM sqlite_sequence WHERE name = 'channels';
INSERT INTO sqlite_sequence (name, seq) SELECT 'channels', coalesce(max(x), 0) FROM (
    SELECT max(id) AS x FROM channels
    UNION ALL SELECT max(channel_id) FROM alert_deliveries
    UNION ALL SELECT max(CAST(substr(target, 9) AS INTEGER)) FROM audit WHERE target LIKE 'channel:%'
);
CREATE TABLE alert_rules_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);
INSERT INTO alert_rules_new (id, name, spec, enabled, created_at, created_by) SELECT id, name, spec, enabled, created_at, created_by FROM alert_rules;
DROP TABLE alert_rules;
ALTER TABLE alert_rules_new RENAME TO alert_rules;
DELETE FROM sqlite_sequence WHERE name = 'alert_rules';
INSERT INTO sqlite_sequence (name, seq) SELECT 'alert_rules', coalesce(max(x), 0) FROM (
    SELECT max(id) AS x FROM alert_rules
    UNION ALL SELECT max(rule_id) FROM alerts
    UNION ALL SELECT max(rule_id) FROM silences
    UNION ALL SELECT max(CAST(substr(target, 6) AS INTEGER)) FROM audit WHERE target LIKE 'rule:%'
);
CREATE TABLE silences_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id INTEGER,
    node_id INTEGER,
    grp TEXT,
    tag TEXT,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    comment TEXT NOT NULL,
    created_by TEXT NOT NULL
);
INSERT INTO silences_new (id, rule_id, node_id, grp, tag, starts_at, ends_at, comment, created_by) SELECT id, rule_id, node_id, grp, tag, starts_at, ends_at, comment, created_by FROM silences;
DROP TABLE silences;
ALTER TABLE silences_new RENAME TO silences;
DELETE FROM sqlite_sequence WHERE name = 'silences';
INSERT INTO sqlite_sequence (name, seq) SELECT 'silences', coalesce(max(x), 0) FROM (
    SELECT max(id) AS x FROM silences
    UNION ALL SELECT max(CAST(substr(target, 9) AS INTEGER)) FROM audit WHERE target LIKE 'silence:%'
);
CREATE INDEX silences_ends ON silences(ends_at);
""",
    # 10: the top processes of each sample (core/store/processes.py), kept apart from the metrics
    # with their own retention. A rowid table appends each commit's rows in arrival order (rows of
    # ~1 kB would make a WITHOUT ROWID table rewrite a page per node); the small indexes find a
    # node's snapshot at a moment and the rows past retention.
    """
CREATE TABLE proc_samples (
    id INTEGER PRIMARY KEY,
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX proc_samples_node_ts ON proc_samples(node_id, ts);
CREATE INDEX proc_samples_ts ON proc_samples(ts);
""",
    # 11: named series (custom metrics, service checks; core/store/series.py): a dictionary of
    # (node, name, labels) and narrow point tables keyed (series_id, ts), each in step with the
    # sample tables' resolutions and retentions.
    """
CREATE TABLE series (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    unit TEXT,
    UNIQUE (node_id, name, labels)
);
CREATE TABLE series_raw (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE series_1m (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    cnt INTEGER NOT NULL,
    avg REAL, min REAL, max REAL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE series_1h (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    cnt INTEGER NOT NULL,
    avg REAL, min REAL, max REAL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
""",
    # 12: the containers of each
    # sample that carries a list (core/store/containers.py), laid out like proc_samples and for
    # the same reasons, with their own retention.
    """
CREATE TABLE container_samples (
    id INTEGER PRIMARY KEY,
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX container_samples_node_ts ON container_samples(node_id, ts);
CREATE INDEX container_samples_ts ON container_samples(ts);
""",
    # 13: the newest detail of each node (per-core CPU, disks, interfaces, sensors, battery), which
    # the raw rows no longer carry (core/store/rows.py): filled from the newest row that has one.
    """
CREATE TABLE node_latest (
    node_id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    detail BLOB NOT NULL
);
INSERT INTO node_latest (node_id, ts, detail)
    SELECT id, ts, detail FROM (
        SELECT n.id AS id,
            (SELECT ts FROM samples_raw WHERE node_id = n.id AND detail IS NOT NULL ORDER BY ts DESC LIMIT 1) AS ts,
            (SELECT detail FROM samples_raw WHERE node_id = n.id AND detail IS NOT NULL ORDER BY ts DESC LIMIT 1) AS detail
        FROM nodes AS n
    ) WHERE detail IS NOT NULL;
INSERT INTO node_latest (node_id, ts, detail)
    SELECT node_id, max(ts), detail FROM samples_head WHERE detail IS NOT NULL GROUP BY node_id
    ON CONFLICT (node_id) DO UPDATE SET ts = excluded.ts, detail = excluded.detail WHERE excluded.ts > node_latest.ts;
""",
    # 14: settled raw points of the named series, a compressed chunk per series and ten-minute
    # window (core/store/chunks.py): a narrow series_raw row cost ~24 bytes per value, a chunk ~2.
    # series_raw stays as the head of recent points; series_1m likewise, with three-hour chunks.
    # Rowid tables with the key as an index: chunks of a kilobyte or two would overflow the leaf
    # pages of a WITHOUT ROWID table.
    """
CREATE TABLE series_chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX series_chunks_key ON series_chunks (series_id, ts);
CREATE TABLE series_1m_chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX series_1m_chunks_key ON series_1m_chunks (series_id, ts);
""",
    # 15: new series points in arrival (time) order, as samples_head is for samples: series_raw is
    # clustered by series, and a commit of one point for each of 22,500 series rewrote a page of it
    # per series (1.8 GB a minute at 2,500 agents). The rollup pass moves them over in series order
    # (core/store/series.py).
    """
CREATE TABLE series_incoming (
    ts INTEGER NOT NULL,
    series_id INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (ts, series_id)
) WITHOUT ROWID;
""",
]

SCHEMA_VERSION = len(MIGRATIONS)

# The tables with a column per metric, and the columns each holds for one.
RAW_TABLES = ("samples_raw", "samples_head")
ROLLUP_AGGREGATES = ("avg", "min", "max")


def metric_columns(table: str, fields: Sequence[str]) -> list[str]:
    """The columns `table` holds for the metrics `fields`, in order: the value, or its rollup aggregates."""
    if table in RAW_TABLES:
        return list(fields)
    return [f"{f}_{agg}" for f in fields for agg in ROLLUP_AGGREGATES]


def add_metric_columns(con: sqlite3.Connection, fields: Sequence[str]) -> list[str]:
    """Add every column of `fields` a sample table lacks, in one transaction; returns them as table.column.

    The migrations create the sample tables with the metric table (FIELDS) of their day, so a row
    added to it since has no column in an existing database; ADD COLUMN appends it, which is why
    every statement names its columns. A table a migration has not created yet is left to it.
    Looked for before the write lock is taken: nearly every open finds nothing to add, and must
    not wait for a running core's writer (an admin command opens the database beside one).
    """
    tables = (*RAW_TABLES, *(name for name, _ in ROLLUP_TABLES.values()))

    def missing() -> list[tuple[str, str]]:
        out = []
        for table in tables:
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if have:
                out += [(table, c) for c in metric_columns(table, fields) if c not in have]
        return out

    if not missing():
        return []
    con.execute("BEGIN IMMEDIATE")
    try:
        todo = missing()  # again under the lock: another process may have added them meanwhile
        for table, column in todo:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} REAL")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    added = [f"{table}.{column}" for table, column in todo]
    log.info("database: added metric column(s) %s", ", ".join(added))
    return added


def migrate_sync(path: Path, upto: int | None = None) -> int:
    """Bring the file at `path` up to `upto` (default: newest), with a column for every metric the
    table names; returns the version reached."""
    target = SCHEMA_VERSION if upto is None else upto
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"database {path} has schema {version}, newer than this core ({SCHEMA_VERSION}); upgrade the core"
            )
        while version < target:
            script = MIGRATIONS[version]
            version += 1
            # executescript commits first, so wrap the step and its version bump in one transaction.
            con.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
            log.info("database migrated to schema %d", version)
        add_metric_columns(con, SCALAR_FIELDS)
        return version
    finally:
        con.close()
