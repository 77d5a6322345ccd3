"""What `streamlit run` serves: the dashboard (`app/main.py`) as a Streamlit ASGI app, behind two
middlewares: one closes Streamlit's /_stcore/metrics endpoint, which no config option turns off and which
would show anyone, logged in or not, the instance's sessions, caches and upload activity; the other turns
Nagle's algorithm off on the server's listening socket, which Streamlit binds itself without it."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import streamlit as st
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
CLOSED_PATHS = re.compile(r"(^|/)_stcore/metrics/?$", re.IGNORECASE)


class ClosedPaths:
    """ASGI middleware: answers 404 to every HTTP request for a `CLOSED_PATHS` path (repeated slashes
    folded first, so ``//_stcore///metrics`` is closed too) and passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and CLOSED_PATHS.search(re.sub("/+", "/", scope["path"])):
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def disable_nagle_on_listening_sockets() -> int:
    """Set TCP_NODELAY on this process's listening TCP sockets and return how many there were.

    Streamlit binds its server socket itself, with protocol number 0, and asyncio only turns Nagle's
    algorithm off on accepted sockets whose protocol reads IPPROTO_TCP. Without this, every response after
    the first on a keep-alive connection (each of the page's ~150 scripts, each websocket message after an
    unacknowledged one) waits for the browser's delayed ACK: 40 ms on Linux, where accepted sockets inherit
    the listener's TCP_NODELAY."""
    count = 0
    for name in os.listdir("/dev/fd") if os.path.isdir("/dev/fd") else ():  # no /dev/fd on Windows
        try:
            sock = socket.socket(fileno=int(name))
        except (OSError, ValueError):
            continue  # not a socket, or closed since the listing
        try:
            tcp = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
            if tcp and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                count += 1
        finally:
            sock.detach()  # the descriptor stays open: it belongs to the server
    return count


class NoDelay:
    """ASGI middleware: at the lifespan's start, before the server accepts its first connection, runs
    `disable_nagle_on_listening_sockets`; passes every scope on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            disable_nagle_on_listening_sockets()
        await self.app(scope, receive, send)


app = st.App("main.py", middleware=[Middleware(NoDelay), Middleware(ClosedPaths)])
