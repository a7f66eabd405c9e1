"""Work that one process of all does at a time, on one node or several sharing a database: it
takes a lease in the store first (store/leases.py). A process that dies holding one is replaced
when the lease expires."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def holder() -> str:
    """This process, as lease rows name it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def wait_for(find: Callable[[], T | None], timeout: float, step: float = 0.1) -> T | None:
    """What `find` returns once it returns something, for up to `timeout` seconds (while another
    process finishes what it holds the lease for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(step)
        found = find()
        if found is not None:
            return found
    return None
