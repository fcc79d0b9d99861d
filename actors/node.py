"""Node identity: which process ran an attempt, as recorded in `Started` (runtime)."""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["make_node_id"]


def make_node_id() -> str:
    """Return a new node id: host, pid and a random suffix (unique across restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
