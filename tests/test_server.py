"""app/server.py: Nagle's algorithm is off on the connections the dashboard's server accepts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from app.server import NoDelay, disable_nagle_on_listening_sockets


@contextmanager
def listener_like_streamlits() -> Iterator[socket.socket]:
    """A listening TCP socket made as Streamlit makes its server's: protocol number left at 0, so asyncio
    would leave Nagle on for the connections it accepts."""
    sock = socket.socket(family=socket.AF_INET)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock
    finally:
        sock.close()


def accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of a connection accepted from ``listener``."""
    with socket.create_connection(listener.getsockname()) as client:
        accepted, _ = listener.accept()
        with accepted:
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) in (0, 1)
            return accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_connections_accepted_after_the_call_have_nagle_off():
    with listener_like_streamlits() as listener, socket.socket() as unrelated:
        assert listener.proto == 0
        assert accepted_nodelay(listener) == 0  # what the server had: every response waited on a delayed ACK
        assert disable_nagle_on_listening_sockets() >= 1
        assert accepted_nodelay(listener) != 0
        assert unrelated.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # only listeners are touched
        assert listener.fileno() >= 0  # the descriptor stays the server's, open


def test_the_middleware_turns_nagle_off_when_the_lifespan_starts_and_passes_every_scope_on():
    seen: list[str] = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    with listener_like_streamlits() as listener:
        asyncio.run(NoDelay(inner)({"type": "http", "path": "/"}, None, None))
        assert accepted_nodelay(listener) == 0  # a request alone changes nothing
        asyncio.run(NoDelay(inner)({"type": "lifespan"}, None, None))
        assert accepted_nodelay(listener) != 0
    assert seen == ["http", "lifespan"]
