"""How `schedlog history` tells a cancel that stopped a claimed action from one that did not."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from schedlog.actors.runner import NOT_RUN_CANCELED
from schedlog.cli_render import timeline_table

T0 = 1_800_000_000_000


def _text(entries: list[dict[str, Any]]) -> str:
    console = Console(width=240, record=True, file=None)
    with console.capture() as captured:
        console.print(timeline_table("job", entries))
    return captured.get()


def _claimed_then_canceled(error: str | None) -> list[dict[str, Any]]:
    return [
        {"type": "Scheduled", "time": T0, "name": "jobs:a", "kind": "action", "args": []},
        {"type": "Started", "time": T0 + 1, "attempt": 1, "node_id": "n1"},
        {"type": "Canceled", "time": T0 + 2},
        {"type": "Completed", "time": T0 + 3, "outcome": "failed", "error": error},
    ]


def test_a_cancel_before_a_claimed_action_was_due_says_it_does_not_run_s20() -> None:
    text = _text(_claimed_then_canceled(NOT_RUN_CANCELED))
    assert "claimed ahead, before it was due: it does not run" in text
    assert "not interrupted" not in text


def test_a_cancel_of_a_running_action_says_it_was_not_interrupted_s21() -> None:
    text = _text(_claimed_then_canceled("ValueError: boom"))
    assert "while in progress (not interrupted)" in text
    assert "claimed ahead" not in text
