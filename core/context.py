"""The core's shared services, held by the aiohttp app under one typed key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from servermanager.core.alerts.channels import Channels
from servermanager.core.alerts.engine import AlertEngine
from servermanager.core.alerts.incidents import Incidents
from servermanager.core.alerts.outbox import Outbox
from servermanager.core.audit import Audit
from servermanager.core.auth import EnrollTokens, LoginThrottle, SlidingWindow, Users
from servermanager.core.bus import Bus
from servermanager.core.clients import Clients, Handshakes
from servermanager.core.commands import Commands
from servermanager.core.install.package import PackageSource
from servermanager.core.logs import LogRelay
from servermanager.core.nodes import Nodes
from servermanager.core.settings import CoreSettings
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore

if TYPE_CHECKING:  # imported with the Redis client only by a core on a Redis bus
    from servermanager.core.cluster import Cluster


@dataclass
class Core:
    settings: CoreSettings
    db: Database
    users: Users
    enroll: EnrollTokens
    store: SampleStore
    bus: Bus
    nodes: Nodes
    audit: Audit
    throttle: LoginThrottle
    commands: Commands
    command_limit: SlidingWindow
    alerts: AlertEngine
    channels: Channels
    outbox: Outbox
    incidents: Incidents
    logs: LogRelay
    started_at: float = field(default_factory=time.time)
    clients: Clients = field(default_factory=Clients)
    handshakes: Handshakes = field(default_factory=lambda: Handshakes(256))
    packages: PackageSource | None = None  # the agent package new servers install; made on first use
    cluster: Cluster | None = None  # with a Redis bus: ownership, routing and leadership across cores

    def leads(self) -> bool:
        """This core runs the cluster-wide jobs (always, when it is the only one)."""
        return self.cluster is None or self.cluster.leader

    def heartbeat_timeout(self, interval: float) -> float:
        """How long a node on this interval may stay silent before it counts as offline."""
        return interval * self.settings.heartbeat_misses + 1.0


CORE = web.AppKey("core", Core)
