"""Test helpers for code that must work offline: assert that it never tries the network, instead of timing
it (a timing flakes on a loaded machine and says nothing about what was attempted)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, NoReturn
from unittest import mock

__all__ = ["network_attempts"]


@contextmanager
def network_attempts() -> Iterator[list[str]]:
    """Inside the block, every DNS lookup and socket connection (from any thread) is refused at once with
    `OSError` (ENETUNREACH) and recorded, e.g. ``"socket.create_connection(('huggingface.co', 443), ...)"``,
    in the yielded list, which a test asserts stays empty. Everything is restored on exit."""
    attempts: list[str] = []

    def refusing(name: str) -> Callable[..., NoReturn]:
        def refuse(*args: Any, **kwargs: Any) -> NoReturn:
            shown = [repr(a) for a in args if not isinstance(a, socket.socket)]  # not the socket itself
            shown += [f"{key}={value!r}" for key, value in kwargs.items()]
            attempts.append(f"{name}({', '.join(shown)})")
            raise OSError(errno.ENETUNREACH, f"network refused by pure_explorer.testing: {name}")

        return refuse

    with ExitStack() as stack:
        for owner, attribute in ((socket, "getaddrinfo"), (socket, "create_connection"),
                                 (socket.socket, "connect"), (socket.socket, "connect_ex")):
            name = f"{'socket' if owner is socket else 'socket.socket'}.{attribute}"
            stack.enter_context(mock.patch.object(owner, attribute, refusing(name)))
        yield attempts
