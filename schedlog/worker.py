"""`schedlog run`: load `MODULE:APP` and run it as a worker node until SIGINT or SIGTERM.

Exit statuses: 0 after a graceful stop; 1 on a bad target or a dead runtime (a `SchedlogError`,
which the CLI prints); 3 when the store stayed unreachable for longer than `max_outage`.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from schedlog.app import App
from schedlog.errors import ConfigurationError
from schedlog.urls import parse_store_url

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["HEALTH_CHECK_S", "STORE_OUTAGE_EXIT", "StoreOutageExit", "load_app", "run_worker"]

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 1.0
"""How often `schedlog run` checks that its runtime is still alive while it waits for a signal."""
STORE_OUTAGE_EXIT = 3


class StoreOutageExit(click.ClickException):
    """The store stayed unreachable too long: `schedlog run` exits with status 3."""

    exit_code = STORE_OUTAGE_EXIT

    def __init__(self, outage_ms: int) -> None:
        super().__init__(f"the store has been unreachable for {outage_ms / 1000:.0f} s")


def run_worker(store: str | None, target: str, *, grace: float, max_outage: float) -> None:
    """Run the App `target` (on `store` if given) until SIGINT or SIGTERM, then stop it.

    The signals are handled from the start: one that comes while the user's module is still
    being imported stops the worker before it starts (it was killed by it before).
    """
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        if stopping.is_set():  # a second one (a hung import, say): as without the handler
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        stopping.set()  # before the log line: a second signal sent on seeing it is a second
        log.info("received %s; stopping", signal.Signals(signum).name)

    previous: dict[int, Any] = {}
    previous.update({s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)})
    app: App | None = None
    try:
        app = _open(store, target)
        if not stopping.is_set():
            app.start()
            click.echo(f"schedlog worker {app.node_id} running on {app.store_config.safe_url}")
            sys.stdout.flush()
        while not stopping.wait(HEALTH_CHECK_S):
            app.check_accepting()  # a dead runtime raises RuntimeClosedError: exit 1
            outage_ms = app.store_outage_ms()
            if outage_ms > max_outage * 1000:
                log.error("the store has been unreachable for %.0f s; giving up", outage_ms / 1000)
                raise StoreOutageExit(outage_ms)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # a second Ctrl-C kills as usual
        if app is not None:
            app.stop(timeout_s=grace)
            app.close()
    click.echo(f"schedlog worker {app.node_id} stopped")


def _open(store: str | None, target: str) -> App:
    """Load `target`; refuse it if `store` was given and the App is on another one."""
    wanted = None if store is None else parse_store_url(store)
    if store is not None:
        os.environ["SCHEDLOG_STORE"] = store  # read when the user's module calls App()
    app = load_app(target)
    if wanted is not None and not wanted.same_store(app.store_config):
        app.close()
        raise ConfigurationError(
            f"{target} runs on {app.store_config.safe_url!r}, not on --store "
            f"{wanted.safe_url!r}: its module passes App(store=...), which --store cannot "
            "change (App() with no store reads $SCHEDLOG_STORE, which --store sets)"
        )
    return app


def load_app(target: str) -> App:
    """Import `MODULE:APP` (the current directory first on sys.path) and return the App."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:APP (e.g. myproject.jobs:app), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(f"cannot import {module_name!r}: {e}") from e
    value: object = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(value, App):
        raise ConfigurationError(f"{target!r} is a {type(value).__name__}, not a schedlog App")
    return value
