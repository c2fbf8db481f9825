"""What every log reader shares: the chunk sender's type, the follow pace, the rate bucket, and the
engine failure of container logs (kept here so the readers import no service and the service none of them)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from servermanager.common.protocol import LogsChunk

Send = Callable[[LogsChunk], Awaitable[None]]
FLUSH_EVERY = 0.25  # seconds between chunks of a follow


class Bucket:
    """max_bytes_per_second, with a second's worth saved up; take() says whether `n` bytes may go."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = float(rate)
        self.at = clock()

    def take(self, n: int) -> bool:
        now = self.clock()
        self.tokens = min(float(self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True

    def available(self) -> int:
        now = self.clock()
        self.tokens = min(float(self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        return max(0, int(self.tokens))


class EngineFailed(Exception):
    """The container engine could not serve a log request; `code` is the chunk's error code."""

    def __init__(self, message: str, code: str = "failed") -> None:
        super().__init__(message)
        self.code = code
