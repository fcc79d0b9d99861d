"""What every runtime actor shares: daemon threads, a logged death, and clock wake-ups (runtime)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import pykka

from schedlog.actors.messages import Wake

if TYPE_CHECKING:
    from types import TracebackType

    from schedlog.actors.ports import Clock, Wakeup

__all__ = ["RuntimeActor", "wake_me_at"]

log = logging.getLogger(__name__)


class RuntimeActor(pykka.ThreadingActor):
    """A pykka actor of the runtime.

    Its thread is a daemon, so an App left running never pins the interpreter (the App stops
    itself at exit). pykka has no supervisor: a dead actor stays dead, so its death is logged
    with the traceback and the App treats it as fatal (`RuntimeClosedError`).
    """

    use_daemon_thread = True

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Log the crash; the App sees the dead actor and refuses further work."""
        exc_info = (exception_type, exception_value, traceback)
        log.error("%s died", type(self).__name__, exc_info=exc_info)  # type: ignore[arg-type]


def wake_me_at(clock: Clock, deadline_ms: int, ref: pykka.ActorRef[Any]) -> Wakeup:
    """Have the clock tell `ref` a `Wake()` at `deadline_ms` (nothing if it died by then)."""

    def wake() -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(Wake())

    return clock.wake_at(deadline_ms, wake)
