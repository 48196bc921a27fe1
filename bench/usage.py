"""CPU and memory of the processes under test, and of the load generator, over one window.

CPU comes from psutil (user + system time, children excluded). Peak RSS is the kernel's own
high-water mark (`VmHWM`), reset at the start of each window by writing 5 to
`/proc/<pid>/clear_refs`, so a window's peak is its own and not the process's lifetime peak. The
broker and the database are counted too (every `beam.smp` / `postgres` process of the machine):
their CPU is part of what a message costs.
"""

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak(pid: int) -> None:
    # Needs to be the process's owner or root; without it the peak is the lifetime one.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every core, everything but idle)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def machine_processes(name: str) -> list[psutil.Process]:
    """The root processes of that name: with `tree`, a group counts their children too."""
    found = [p for p in psutil.process_iter(["name", "ppid"]) if p.info["name"] == name]
    pids = {p.pid for p in found}
    return [p for p in found if p.info["ppid"] not in pids]


@dataclass
class Group:
    """Named processes measured together (one service, or every PostgreSQL backend)."""

    name: str
    processes: list[psutil.Process]
    # Only a group of one process has a meaningful peak RSS (backends share memory).
    memory: bool = True
    # Count the processes' children as well, those running and those already ended: a
    # PostgreSQL backend that closes during the window takes its CPU with it otherwise.
    tree: bool = False
    cpu_start: float = 0.0
    writes_start: int = 0

    def cpu(self) -> float:
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                total += _cpu(process)
                if self.tree:
                    times = process.cpu_times()
                    total += times.children_user + times.children_system
                    for child in process.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            total += _cpu(child)
        return total

    def writes(self) -> int:
        """write(2)-family system calls so far: every frame to the broker, query to the database
        and frame to a client is one unless batched, and on loopback each costs the kernel's TCP
        path for both ends."""
        total = 0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                total += process.io_counters().write_count
        return total


@dataclass
class Usage:
    """Start, then `stop()` returns per group: cores used on average, CPU seconds, peak RSS."""

    groups: list[Group]
    started: float = 0.0
    machine_start: float = 0.0
    rss_start: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, services: dict[str, int], *, infrastructure: bool = True) -> "Usage":
        groups = [Group(name, [psutil.Process(pid)]) for name, pid in services.items()]
        groups.append(Group("load generator", [psutil.Process(os.getpid())]))
        if infrastructure:
            groups.append(Group("rabbitmq", machine_processes("beam.smp"), memory=False, tree=True))
            groups.append(Group("postgresql", machine_processes("postgres"), memory=False, tree=True))
        return cls(groups)

    def start(self) -> None:
        for group in self.groups:
            group.cpu_start = group.cpu()
            group.writes_start = group.writes()
            if group.memory:
                for process in group.processes:
                    _reset_peak(process.pid)
                    self.rss_start[group.name] = process.memory_info().rss
        self.machine_start = _machine_busy()
        self.started = time.perf_counter()

    def stop(self) -> dict[str, dict[str, float]]:
        seconds = time.perf_counter() - self.started
        result: dict[str, dict[str, float]] = {}
        for group in self.groups:
            cpu = group.cpu() - group.cpu_start
            row = {"cpu_seconds": round(cpu, 3), "cores": round(cpu / seconds, 3) if seconds else 0.0}
            if not group.tree:
                # (A process tree's ended children take their counts with them.)
                row["writes"] = group.writes() - group.writes_start
            if group.memory:
                with contextlib.suppress(psutil.Error, OSError):
                    process = group.processes[0]
                    row["peak_rss_mb"] = round(_peak_rss_bytes(process.pid) / 2**20, 1)
                    row["rss_mb"] = round(process.memory_info().rss / 2**20, 1)
                    row["rss_start_mb"] = round(self.rss_start.get(group.name, 0) / 2**20, 1)
            result[group.name] = row
        busy = _machine_busy() - self.machine_start
        measured = sum(row["cpu_seconds"] for row in result.values())
        result["machine"] = {
            "seconds": round(seconds, 3),
            "cores": round(busy / seconds, 3) if seconds else 0.0,
            # CPU of processes this window does not measure (the kernel's own work included):
            # more than a little means something else was running and the figures are suspect.
            "other_cores": round(max(0.0, busy - measured) / seconds, 3) if seconds else 0.0,
        }
        return result
