"""Real cores for tests, benchmarks and tools: the core served in-process on a loopback port, with its admin."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from devkit.ports import free_port
from servermanager.common import protocol as p
from servermanager.common.tls import fingerprint_digest
from servermanager.core.app import create_app
from servermanager.core.context import CORE, Core
from servermanager.core.datadir import initial_admin_password
from servermanager.core.settings import CoreSettings
from servermanager.core.tls import ServerTLS, server_tls

# Quick timeouts and no background jobs unless asked for: what a test wants to wait on.
FAST = {
    "hello_timeout": 0.5,
    "flush_every": 0.005,
    "rollup_every": 3600.0,
    "prune_every": 3600.0,
    "agent_interval": 1.0,
    "heartbeat_misses": 2,
}


# The PostgreSQL databases RunningCores made (name -> server), for drop_postgresql_databases().
PG_DATABASES: dict[str, str] = {}


async def drop_postgresql_databases() -> None:
    """Drop every database a RunningCore made under SM_DEVKIT_POSTGRESQL."""
    import asyncpg

    for name, server in list(PG_DATABASES.items()):
        con = await asyncpg.connect(f"{server.rstrip('/')}/postgres", timeout=5)
        try:
            await con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await con.close()
        del PG_DATABASES[name]


class RunningCore:
    """create_app() served by an AppRunner on 127.0.0.1:<free port>.

    With `tls="on"` it serves HTTPS/WSS as `servermanager core` would (its certificate generated
    into the data dir, or `tls_cert`/`tls_key`), and `url`, `agent_ws` and `client_ws` say so; its
    own `http` session pins that certificate.
    """

    def __init__(self, data_dir: Path, port: int | None = None, **settings: Any) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        # With SM_DEVKIT_POSTGRESQL (a server's URL, no database name), a core not given a `database`
        # runs on a fresh PostgreSQL database of its own there, made on start and dropped on stop:
        # how the whole suite runs on PostgreSQL.
        self.pg_server = os.environ.get("SM_DEVKIT_POSTGRESQL", "") if "database" not in settings else ""
        # Named after the data dir: a core restarted on the same data dir finds its data again. Each
        # is dropped by drop_postgresql_databases() (tests: at the end of the session).
        digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
        self.pg_name = f"sm_test_{digest}" if self.pg_server else ""
        if self.pg_server:
            settings = {**settings, "database": f"{self.pg_server.rstrip('/')}/{self.pg_name}"}
        opts = {**FAST, **settings, "data_dir": str(data_dir), "listen": f"127.0.0.1:{self.port}"}
        self.settings = msgspec.convert(opts, CoreSettings)
        self.settings.validate()
        self.tls: ServerTLS | None = server_tls(self.settings, data_dir)
        self.app = create_app(self.settings)
        self.runner = web.AppRunner(self.app, handle_signals=False)
        self.http: aiohttp.ClientSession | None = None
        self._admin: str | None = None

    @property
    def fingerprint(self) -> str:
        """The pin of the certificate served (`sha256:<hex>`); only with TLS."""
        assert self.tls is not None, "this core serves plain HTTP"
        return self.tls.fingerprint

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def agent_ws(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{p.AGENT_WS_PATH}"

    @property
    def client_ws(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{p.CLIENT_WS_PATH}"

    @property
    def core(self) -> Core:
        return self.app[CORE]

    async def _pg_admin(self, sql: str) -> None:
        import asyncpg

        con = await asyncpg.connect(f"{self.pg_server.rstrip('/')}/postgres", timeout=5)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    async def start(self) -> RunningCore:
        if self.pg_name and self.pg_name not in PG_DATABASES:
            await self._pg_admin(f"DROP DATABASE IF EXISTS {self.pg_name} WITH (FORCE)")  # a past run's
            await self._pg_admin(f"CREATE DATABASE {self.pg_name}")
            PG_DATABASES[self.pg_name] = self.pg_server
        await self.runner.setup()
        context = self.tls.context if self.tls else None
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=context).start()
        trust: aiohttp.Fingerprint | bool = True
        if self.tls is not None:
            trust = aiohttp.Fingerprint(fingerprint_digest(self.tls.fingerprint))
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust))
        return self

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        await self.runner.cleanup()

    async def request(
        self, method: str, path: str, token: str | None = None, json: Any = None, data: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(
            method, self.url + path, headers=headers, json=json, data=data, **kw
        ) as r:
            body = await r.read()
            return r.status, (
                msgspec.json.decode(body) if body and r.content_type == "application/json" else body
            )

    async def admin_token(self) -> str:
        if self._admin is None:
            password = initial_admin_password(self.data_dir)
            status, body = await self.request(
                "POST", "/api/v1/auth/login", json={"username": "admin", "password": password}
            )
            assert status == 200, body
            self._admin = body["access_token"]
        return self._admin

    async def user_token(self, name: str, role: str, password: str = "password123") -> str:
        status, body = await self.request(
            "POST",
            "/api/v1/users",
            await self.admin_token(),
            json={"name": name, "password": password, "role": role},
        )
        assert status == 201, body
        status, body = await self.request(
            "POST", "/api/v1/auth/login", json={"username": name, "password": password}
        )
        assert status == 200, body
        return str(body["access_token"])

    async def enroll_token(self, uses: int = 1, ttl: float = 600) -> str:
        status, body = await self.request(
            "POST", "/api/v1/enroll-tokens", await self.admin_token(), json={"uses": uses, "ttl": ttl}
        )
        assert status == 201, body
        return str(body["token"])
