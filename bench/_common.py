"""What every system shares in the suite: the job body, the sink it writes, worker processes.

The job body, `record(sink, index)`, is the same for every system: it appends one line
`index start_time pid` to the sink file with one `os.write` on an `O_APPEND` descriptor (lines
of concurrent writers, threads or processes, never interleave), and does nothing else. The
suite reads the sink back (`Sink`) for every count and every start time it reports.
"""

from __future__ import annotations

import collections
import math
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the workers' working directory, so `bench.*` modules import."""

_fds: dict[str, int] = {}
_fds_lock = threading.Lock()


def record(sink: str, index: int) -> None:
    """The job body: append `index start_time pid` to `sink` in one write."""
    started = time.time()
    fd = _fds.get(sink)
    if fd is None:
        with _fds_lock:
            fd = _fds.get(sink)
            if fd is None:
                fd = os.open(sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _fds[sink] = fd
    os.write(fd, f"{index} {started:.6f} {os.getpid()}\n".encode())


def close_sinks() -> None:
    """Close the descriptors `record` opened in this process."""
    with _fds_lock:
        for fd in _fds.values():
            os.close(fd)
        _fds.clear()


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a sink: a job body ran."""

    index: int
    started: float
    pid: int


class Sink:
    """Reads a sink file as it grows (each `poll` parses the complete lines added since)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[Entry] = []
        self.indexes: set[int] = set()
        """The jobs that ran at least once."""
        self._offset = 0
        self._partial = b""
        path.touch()

    def poll(self) -> int:
        """Read what was appended since the last call; return how many lines there are."""
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            index, started, pid = line.split()
            self.entries.append(Entry(int(index), float(started), int(pid)))
            self.indexes.add(int(index))
        return len(self.entries)

    def wait_for(
        self, count: int, timeout_s: float, stall_s: float = 60.0, *, distinct: bool = False
    ) -> bool:
        """Poll until `count` lines (`distinct`: jobs) are in; False after `timeout_s`, or
        after `stall_s` without a new line.
        """
        deadline = time.monotonic() + timeout_s
        last, last_change = self.poll(), time.monotonic()
        while (len(self.indexes) if distinct else last) < count:
            now = time.monotonic()
            if now > deadline or now - last_change > stall_s:
                return False
            time.sleep(0.005)
            n = self.poll()
            if n != last:
                last, last_change = n, time.monotonic()
        return True

    def runs_per_index(self) -> collections.Counter[int]:
        """How many times each job index ran."""
        self.poll()
        return collections.Counter(e.index for e in self.entries)


@dataclass(slots=True)
class WorkerSpec:
    """How to run a system's worker in its own process, and how it says it is ready."""

    argv: list[str]
    env: dict[str, str]
    ready: str
    """A substring of the output line that means the worker is running."""
    stop_signal: int = signal.SIGTERM
    """The signal that stops it gracefully (running jobs finish)."""


@dataclass(slots=True)
class WorkerProcess:
    """A worker subprocess; a thread copies its output (stdout and stderr) to a log file."""

    spec: WorkerSpec
    log_path: Path
    spawned_at: float = 0.0
    ready_at: float = 0.0
    proc: subprocess.Popen[str] | None = None
    _lines: queue.Queue[tuple[float, str] | None] = field(default_factory=queue.Queue)
    _pump: threading.Thread | None = None

    def start(self, timeout_s: float = 120) -> float:
        """Spawn the worker and wait for its ready line; return the time it was seen."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDLOG_")}
        env |= {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.spec.env}
        self._lines = queue.Queue()
        self.spawned_at = time.time()
        self.proc = subprocess.Popen(
            self.spec.argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stdout = self.proc.stdout
        assert stdout is not None  # noqa: S101 - stdout=PIPE
        log = self.log_path.open("a", encoding="utf-8")
        self._pump = threading.Thread(target=self._copy, args=(stdout, log), daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                item = self._lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                item = None
            if item is None:
                self.kill()
                tail = self.log_path.read_text(encoding="utf-8")[-2000:]
                raise RuntimeError(f"worker {self.spec.argv} never got ready:\n{tail}")
            seen_at, line = item
            if self.spec.ready in line:
                self.ready_at = seen_at
                return seen_at

    def _copy(self, stdout: IO[str], log: IO[str]) -> None:
        with log:
            for line in stdout:
                self._lines.put((time.time(), line))
                log.write(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101 - started
        return self.proc.pid

    def rss_mib(self) -> float:
        """The worker's resident memory (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def stop(self, timeout_s: float = 60) -> int | None:
        """Stop gracefully (the spec's signal); kill it if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(self.spec.stop_signal)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._reap()

    def kill(self) -> None:
        """SIGKILL it (a crash: nothing of it runs any more once this returns)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def _reap(self) -> int | None:
        assert self.proc is not None  # noqa: S101 - started
        if self._pump is not None:
            self._pump.join(timeout=10)
        status = self.proc.returncode
        self.proc = None
        return status


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`values` need not be sorted)."""
    ordered = sorted(values)
    k = min(max(math.ceil(q * len(ordered)) - 1, 0), len(ordered) - 1)
    return ordered[k]
