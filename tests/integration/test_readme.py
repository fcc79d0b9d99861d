"""The README's example runs as written (on a fresh store in a temporary directory)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pykka
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has a python example"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "readme_example.py").write_text(blocks[0])
    module = None
    try:
        module = importlib.import_module("readme_example")  # eventsourcing imports topics
    finally:
        if module is not None:
            module.app.close()
        sys.modules.pop("readme_example", None)
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
    out = capsys.readouterr().out
    assert "{'kind': 'success'}" in out
    assert "receipt for" in out
    assert "['Scheduled', 'Started', 'Completed']" in out
    assert (tmp_path / "schedlog.db").exists()
