"""Small clients that speak a real core's protocols, and sample data for them (the core: devkit.cores)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import aiohttp

from devkit.cores import RunningCore
from servermanager.common import metrics as mt
from servermanager.common import protocol as p


def host_facts(name: str = "test-host") -> mt.HostFacts:
    return mt.HostFacts(
        hostname=name,
        os="Linux",
        os_version="12",
        kernel="6.1",
        arch="x86_64",
        cpu_model="Test CPU",
        cpu_count=2,
        mem_total=8 << 30,
        agent_version="test",
    )


def metrics(cpu: float = 10.0, **over: Any) -> mt.Metrics:
    base: dict[str, Any] = dict(
        cpu_pct=cpu,
        cpu_per_core=[cpu, cpu],
        load1=0.5,
        load5=0.4,
        load15=0.3,
        mem_total=8 << 30,
        mem_used=2 << 30,
        mem_pct=25.0,
        swap_total=0,
        swap_used=0,
        swap_pct=0.0,
        uptime=1000.0,
        procs=100,
        disks=[mt.DiskUsage(mount="/", fstype="ext4", total=100, used=40, pct=40.0)],
        disk_read_bps=1.0,
        disk_write_bps=2.0,
        disk_read_iops=3.0,
        disk_write_iops=4.0,
        nets=[mt.NetIface(name="eth0", rx_total=10, tx_total=20, rx_bps=5.0, tx_bps=6.0)],
        net_rx_bps=5.0,
        net_tx_bps=6.0,
    )
    base.update(over)
    return mt.Metrics(**base)


class RawAgent:
    """Speaks /ws/agent frame by frame, so tests can also send what a real agent never would."""

    def __init__(self, core: RunningCore, name: str = "test-host") -> None:
        self.core = core
        self.name = name
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.node_id: int | None = None
        self.credential: str | None = None
        self.seq = 0
        self._dec = p.decoder(p.CoreToAgent)
        self.skipped: list[Any] = []  # frames recv_type passed over, in order (incident requests...)

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        assert self.core.http is not None
        self.ws = await self.core.http.ws_connect(self.core.agent_ws, max_msg_size=0)
        return self.ws

    async def hello(
        self,
        *,
        token: str | None = None,
        credential: str | None = None,
        protocol: int = p.PROTOCOL_VERSION,
        log_sources: p.LogSources | None = None,
        exec_policy: p.ExecReport | None = None,
        enroll_id: str | None = None,
    ) -> p.Welcome:
        ws = await self.connect()
        await ws.send_bytes(
            p.encode(
                p.Hello(
                    protocol=protocol,
                    host=host_facts(self.name),
                    credential=credential or self.credential,
                    enroll_token=token,
                    log_sources=log_sources,
                    exec_policy=exec_policy,
                    enroll_id=enroll_id,
                )
            )
        )
        frame = await self.recv()
        assert isinstance(frame, p.Welcome), frame
        self.node_id = frame.node_id
        if frame.credential:
            self.credential = frame.credential
        return frame

    async def recv(self, timeout: float = 5.0) -> Any:
        assert self.ws is not None
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return p.decode(self._dec, msg.data)
        return msg

    async def recv_type(self, cls: type, timeout: float = 5.0) -> Any:
        """Skip frames of other types (pings from the core) until one of `cls` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(frame, cls):
                return frame
            if isinstance(frame, aiohttp.WSMessage):
                raise AssertionError(f"socket ended while waiting for {cls.__name__}: {frame}")
            self.skipped.append(frame)

    def make(self, n: int = 1, ts: float | None = None, step: float = 1.0, **over: Any) -> list[mt.Sample]:
        out = []
        t0 = time.time() if ts is None else ts
        for i in range(n):
            self.seq += 1
            out.append(mt.Sample(seq=self.seq, ts=t0 + i * step, metrics=metrics(**over)))
        return out

    async def send_samples(self, samples: list[mt.Sample]) -> p.Ack:
        assert self.ws is not None
        await self.ws.send_bytes(p.encode(p.Samples(samples=samples)))
        ack: p.Ack = await self.recv_type(p.Ack)
        return ack

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class RawClient:
    """Speaks /ws/client: auth, subscribe, then reads events."""

    def __init__(self, core: RunningCore) -> None:
        self.core = core
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._dec = p.decoder(p.CoreToClient)
        self._pending: deque[Any] = deque()

    async def connect(self, token: str) -> p.AuthOk:
        assert self.core.http is not None
        self.ws = await self.core.http.ws_connect(self.core.client_ws)
        await self.ws.send_bytes(p.encode(p.Auth(token=token)))
        frame = await self.recv()
        assert isinstance(frame, p.AuthOk), frame
        return frame

    async def subscribe(self, nodes: list[int] | None = None) -> p.Snapshot:
        assert self.ws is not None
        await self.ws.send_bytes(p.encode(p.Subscribe(nodes=nodes, all=nodes is None)))
        return await self.recv_type(p.Snapshot)

    async def recv(self, timeout: float = 5.0) -> Any:
        """The next frame, a batch's frames one at a time; the WSMessage once the socket ends."""
        assert self.ws is not None
        if self._pending:
            return self._pending.popleft()
        msg = await self.ws.receive(timeout=timeout)
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            self._pending.extend(p.decode_all(self._dec, msg.data))
            return self._pending.popleft()
        return msg

    async def recv_type(self, cls: type, timeout: float = 5.0, where: Any = None) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(frame, aiohttp.WSMessage):
                raise AssertionError(f"socket ended while waiting for {cls.__name__}: {frame}")
            if isinstance(frame, cls) and (where is None or where(frame)):
                return frame

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
