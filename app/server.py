"""What `streamlit run` serves: the dashboard (`app/main.py`) as a Streamlit ASGI app, behind one
middleware that closes Streamlit's /_stcore/metrics endpoint, which no config option turns off and which
would show anyone, logged in or not, the instance's sessions, caches and upload activity."""

from __future__ import annotations

import re
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


app = st.App("main.py", middleware=[Middleware(ClosedPaths)])
