"""Open streams per client address on this process: the per-client limit.

The address is the ASGI scope's ``client`` (uvicorn replaces the peer with the
``X-Forwarded-For`` entry only for peers in ``FORWARDED_ALLOW_IPS``), IPv4-mapped IPv6
addresses folded to IPv4. An address without streams takes no memory.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


class TooManyStreams(Exception):
    def __init__(self, address: str, limit: int) -> None:
        super().__init__(f"{address} has {limit} open streams")
        self.address = address
        self.limit = limit


def client_address(scope: Mapping[str, object]) -> str:
    client = scope.get("client")
    if not isinstance(client, list | tuple) or not client:
        return "unknown"
    return address_of(str(client[0]))


@functools.lru_cache(maxsize=4096)  # a connect asks for it; a storm comes from few hosts
def address_of(host: str) -> str:
    """The per-client limit's key for a peer host: an IP address in its normal form."""
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        return host  # a Unix socket path or a name: counted as it is
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


class ClientLimits:
    """``limit`` open streams per address; 0 means no limit (only counting)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def count(self, address: str) -> int:
        return self._open.get(address, 0)

    def __len__(self) -> int:
        """Addresses with at least one open stream."""
        return len(self._open)

    def try_acquire(self, address: str) -> bool:
        """Take one of ``address``'s slots; False (nothing taken) when none is free."""
        held = self._open.get(address, 0)
        if self.limit and held >= self.limit:
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)

    @contextmanager
    def slot(self, address: str) -> Iterator[None]:
        """Hold one of ``address``'s slots for the block; TooManyStreams when none is free."""
        if not self.try_acquire(address):
            raise TooManyStreams(address, self.limit)
        try:
            yield
        finally:
            self.release(address)
