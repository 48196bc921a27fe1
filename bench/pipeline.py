"""Where a message's time goes inside Switchboard: each service's own metrics over one step.

Every service's `/metrics` has, per service, the time from an event's creation (its envelope
time, set by its producer) to the start of the batch that handles it (`switchboard_event_lag_seconds`,
per event type), and how long batches took and how many events they held
(`switchboard_batch_seconds`, `switchboard_batch_size`); the broker publishes are counted per
exchange (`switchboard_published_messages_total`, `switchboard_published_events_total`). Read at the
start and end of a step, their differences give each hop's mean wait and work, and the batch
sizes that paid for it: the latency budget per hop in docs/benchmarks.md.
"""

import asyncio
from collections import defaultdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["read", "summarize"]

# (metric, labels that name the series) -> (sum, count), or a counter's value as (value, 0).
Snapshot = dict[str, dict[tuple[str, ...], tuple[float, float]]]

_HISTOGRAMS = {
    "switchboard_event_lag_seconds": ("service", "type"),
    "switchboard_batch_phase_seconds": ("service", "phase"),
    "switchboard_batch_seconds": ("service",),
    "switchboard_batch_size": ("service",),
}
_COUNTERS = {
    "switchboard_published_messages": ("exchange",),
    "switchboard_published_events": ("exchange",),
}


async def read(urls: dict[str, str]) -> dict[str, Snapshot]:
    """Each process's pipeline metrics now (a process that does not answer is left out)."""

    async def one(client: httpx.AsyncClient, url: str) -> Snapshot | None:
        try:
            response = await client.get(f"{url}/metrics", timeout=10)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return _parse(response.text)

    async with httpx.AsyncClient() as client:
        names = list(urls)
        found = await asyncio.gather(*(one(client, urls[name]) for name in names))
    return {name: snapshot for name, snapshot in zip(names, found, strict=True) if snapshot is not None}


def _parse(text: str) -> Snapshot:
    snapshot: Snapshot = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        if family.name in _HISTOGRAMS:
            keys = _HISTOGRAMS[family.name]
            sums: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
            for sample in family.samples:
                label = tuple(sample.labels.get(k, "") for k in keys)
                if sample.name.endswith("_sum"):
                    sums[label][0] = sample.value
                elif sample.name.endswith("_count"):
                    sums[label][1] = sample.value
            snapshot[family.name] = {label: (s, c) for label, (s, c) in sums.items()}
        elif family.name in _COUNTERS:
            keys = _COUNTERS[family.name]
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    label = tuple(sample.labels.get(k, "") for k in keys)
                    snapshot[family.name][label] = (sample.value, 0.0)
    return dict(snapshot)


def _delta(before: Snapshot, after: Snapshot, metric: str) -> dict[tuple[str, ...], tuple[float, float]]:
    old = before.get(metric, {})
    return {
        label: (value - old.get(label, (0.0, 0.0))[0], count - old.get(label, (0.0, 0.0))[1])
        for label, (value, count) in after.get(metric, {}).items()
    }


def summarize(before: dict[str, Snapshot], after: dict[str, Snapshot], messages: int) -> dict[str, Any]:
    """Per process: mean lag (ms) per event type, batches, mean events per batch and mean batch
    time (ms), and broker messages and events published per chat message."""
    out: dict[str, Any] = {}
    for name, end in after.items():
        start = before.get(name, {})
        row: dict[str, Any] = {}
        lags = _delta(start, end, "switchboard_event_lag_seconds")
        row["lag_ms"] = {
            event_type: round(1000 * total / count, 1)
            for (_, event_type), (total, count) in lags.items()
            if count
        }
        phases = _delta(start, end, "switchboard_batch_phase_seconds")
        row["phase_ms"] = {
            phase: round(1000 * total / count, 2) for (_, phase), (total, count) in phases.items() if count
        }
        seconds = sum(total for total, _ in _delta(start, end, "switchboard_batch_seconds").values())
        sizes = _delta(start, end, "switchboard_batch_size")
        events = sum(total for total, _ in sizes.values())
        batches = sum(count for _, count in sizes.values())
        if batches:
            row["batches"] = int(batches)
            row["events_per_batch"] = round(events / batches, 2)
            row["batch_ms"] = round(1000 * seconds / batches, 2)
        published = _delta(start, end, "switchboard_published_messages")
        carried = _delta(start, end, "switchboard_published_events")
        if messages:
            row["published_per_message"] = {
                exchange: round(value / messages, 3) for (exchange,), (value, _) in published.items() if value
            }
            row["events_per_publish"] = {
                exchange: round(carried.get((exchange,), (0.0, 0.0))[0] / value, 2)
                for (exchange,), (value, _) in published.items()
                if value
            }
        out[name] = row
    return out
