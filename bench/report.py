"""Results as files: raw JSON, a markdown report, PNG plots, and the generated part of
docs/benchmarks.md (between its `results` markers)."""

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
from hdrh.histogram import HdrHistogram  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
RATE_SCENARIOS = ("pairs", "busy chat", "group", "big group")
# Only when a run has no broker counters (rabbitmqctl missing or failing) do the floor ratios fall
# back to these, counted from docs/architecture.md section 3 for a pairs message: MessageSent,
# MessageStored, the `message_sent` reply, `new_message` to the recipient and to the sender's
# other devices, the acknowledgement (DeliveryAcked, routed to two queues: one publish) and the
# `message_status` to the sender; three of them persistent events through quorum queues.
ESTIMATED_PUBLISHES_PER_MESSAGE = 7.0
ESTIMATED_QUORUM_DELIVERIES_PER_MESSAGE = 3.0

# Pairs at low load: the latency a lightly used system should show, judged at one rate.
LOW_LOAD_RATE = 20.0
LOW_LOAD_TARGET_MS = {"p50": 15.0, "p99": 50.0}
# Pairs' cost targets, judged at one rate whether or not its step held (a step over its latency
# target still says what a message costs).
COST_RATE = 500.0
COST_TARGETS = {"cpu_us": 1500.0, "publishes": 1.5, "rows": 6.0}
# CPU of every process but the load generator per delivery (a message times its recipients).
CPU_PER_DELIVERY_TARGET_US = {"group": 150.0}
# The process whose CPU is the benchmark's own, not the system's.
GENERATOR = "load generator"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _best(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    held = [s for s in steps if s["held"]]
    return held[-1] if held else (steps[0] if steps else None)


def _step_at(result: dict[str, Any] | None, rate: float) -> dict[str, Any] | None:
    """The step of a ladder run at that rate, held or not (None when the ladder did not run it)."""
    for s in (result or {}).get("steps", []):
        if s["rate"] == rate:
            step: dict[str, Any] = s
            return step
    return None


def system_cpu_us(step: dict[str, Any], units: int) -> float | None:
    """CPU of every measured process but the load generator, in µs per unit."""
    if not units:
        return None
    cpu = sum(
        row["cpu_seconds"]
        for name, row in step["processes"].items()
        if name != GENERATOR and "cpu_seconds" in row
    )
    return float(cpu / units * 1e6)


def low_load(result: dict[str, Any] | None) -> tuple[str, float | None]:
    """Pairs' p50 and p99 at the low-load step; the value compared is the p99."""
    step = _step_at(result, LOW_LOAD_RATE)
    if step is None:
        return f"not run at {LOW_LOAD_RATE:g} msg/s", None
    latency = step["latency_ms"]
    if not latency.get("count"):
        return "nothing arrived", None
    return f"p50 {_ms(latency['p50'])} ms, p99 {_ms(latency['p99'])} ms", latency["p99"]


def headline(name: str, result: dict[str, Any]) -> tuple[str, float | None]:
    """The scenario's one figure: what its target is about."""
    if name in RATE_SCENARIOS:
        knee = result.get("knee")
        if knee:
            return f"{knee:g} msg/s", knee
        first = result["steps"][0] if result["steps"] else None
        if first is None:
            return "not run", None
        p99 = first["latency_ms"].get("p99")
        p99_text = f"p99 {_ms(p99)} ms" if p99 is not None else "nothing arrived"
        return f"none held: < {first['rate']:g} msg/s ({p99_text} at {first['rate']:g})", None
    if name == "offline flush":
        return f"{result['seconds']:.2f} s for {result['backlog']:,}", result["seconds"]
    if name == "idle sessions":
        last = result["steps"][-1]
        return (
            f"{last['rss_per_session_kb']:.1f} KB a session at {last['sessions']:,}",
            last["rss_per_session_kb"],
        )
    if name == "reconnect storm":
        return f"{result['seconds']:.2f} s for {result['sessions']:,}", result["seconds"]
    raise ValueError(name)


# Per scenario: what its figure is, the target for it, and which way is better.
FIGURES = {
    "pairs": ("knee: p99 send → receive ≤ 150 ms, nothing lost", "≥ 2,000 msg/s", "higher"),
    # No rate is set as this one's target: its ladder says how far a busy group goes.
    "busy chat": ("knee: p99 send → message_sent ≤ 150 ms, nothing lost", "–", "higher"),
    "group": ("knee: p99 send → last member ≤ 500 ms", "≥ 20 msg/s", "higher"),
    "big group": ("knee: p99 send → last member ≤ 1 s", "≥ 2 msg/s", "higher"),
    "offline flush": ("connect → every queued message received", "≤ 1 s for 10,000", "lower"),
    "idle sessions": ("gateway RSS per idle session", "≤ 30 KB at 20,000", "lower"),
    "reconnect storm": ("drop, reconnect at once → all caught up", "≤ 10 s for 5,000", "lower"),
}


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [f"Produced by `{command}` in {results['seconds'] / 60:.0f} min.", ""]
    scenarios = results["scenarios"]
    lines += [
        "| scenario | figure | target | Switchboard | baseline | Switchboard ÷ baseline | better |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_target in scenarios.items():
        ours = by_target.get("switchboard")
        theirs = by_target.get("baseline")
        if ours is None:
            continue
        text, value = headline(name, ours)
        base_text, base_value = headline(name, theirs) if theirs else ("–", None)
        ratio = f"{value / base_value:.2f}" if value and base_value else "–"
        figure, target, better = FIGURES[name]
        lines.append(f"| {name} | {figure} | {target} | {text} | {base_text} | {ratio} | {better} |")
        if name == "pairs":
            text, value = low_load(ours)
            base_text, base_value = low_load(theirs) if theirs else ("–", None)
            ratio = f"{value / base_value:.2f} (p99)" if value and base_value else "–"
            lines.append(
                f"| pairs, low load | p50 / p99 send → receive at {LOW_LOAD_RATE:g} msg/s"
                f" | p50 ≤ {LOW_LOAD_TARGET_MS['p50']:g} ms, p99 ≤ {LOW_LOAD_TARGET_MS['p99']:g} ms"
                f" | {text} | {base_text} | {ratio} | lower |"
            )
    lines.append("")
    if "floor" in results:
        lines += floor_section(results)
    for name in RATE_SCENARIOS:
        if name in scenarios:
            lines += rate_section(name, scenarios[name])
    for name in ("offline flush", "reconnect storm"):
        if name in scenarios:
            lines += once_section(name, scenarios[name])
    if "idle sessions" in scenarios:
        lines += idle_section(scenarios["idle sessions"])
    return "\n".join(lines) + "\n"


def floor_section(results: dict[str, Any]) -> list[str]:
    floor = results["floor"]
    broker = floor["broker_messages_per_second"]
    single = floor["inserts_per_second_one_per_transaction"]
    batched = floor["inserts_per_second_batched"]
    lines = [
        "### The floor",
        "",
        "| measured alone on this machine | per second |",
        "|---|---|",
        f"| RabbitMQ: persistent 512-byte messages, quorum queue, confirms, consumed | {broker:,.0f} |",
        f"| PostgreSQL: inserts, one per transaction | {single:,.0f} |",
        f"| PostgreSQL: inserts, 100 per transaction | {batched:,.0f} |",
        "",
    ]
    pairs = results["scenarios"].get("pairs", {}).get("switchboard")
    knee_step = _best(pairs["steps"]) if pairs else None
    if pairs and pairs.get("knee") and knee_step is not None:
        knee = pairs["knee"]
        written = knee_step["database_per_message"]
        measured = knee_step.get("broker_per_message") or {}
        # The floor's broker rate is of messages each published once and delivered once from a
        # quorum queue: a pairs message needs that much broker work per quorum delivery, and at
        # most that much per publish of any kind.
        quorum = measured.get("quorum_deliveries", ESTIMATED_QUORUM_DELIVERIES_PER_MESSAGE)
        publishes = measured.get("publishes", ESTIMATED_PUBLISHES_PER_MESSAGE)
        source = "measured" if measured else "estimated, no broker counters"

        def row(limit: str, per_message: float, floor_rate: float) -> str:
            allows = floor_rate / per_message if per_message else float("inf")
            return f"| {limit} | {per_message:,.1f} | {allows:,.0f} msg/s | {knee / allows:.1%} |"

        lines += [
            "What the floor allows a pairs message, given what one costs at Switchboard's knee"
            f" ({knee:g} msg/s), and the knee as a fraction of it:",
            "",
            "| limit | per message | allows | knee ÷ allowed |",
            "|---|---|---|---|",
            row(f"broker, deliveries from quorum queues ({source})", quorum, broker),
            row(f"broker, every publish counted as persistent ({source})", publishes, broker),
            row("database, rows written (batched)", written["rows"], batched),
            row("database, transactions committed", written["commits"], single),
            "",
        ]
    return lines


def rate_section(name: str, by_target: dict[str, Any]) -> list[str]:
    any_result = next(iter(by_target.values()))
    lines = [
        f"### {name}: {any_result['what']}",
        "",
        f"Latency is {any_result['figure']}, from when the send was due.",
        "",
        "| system | rate | achieved | p50 ms | p90 | p99 | p99.9 | max | send → message_sent p50 / p99 ms"
        " | lost | dup | reordered | refused | generator cores | machine cores (other) | held |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for target, result in by_target.items():
        for s in result["steps"]:
            lat = s["latency_ms"]
            confirm = s.get("to_confirm_ms", {})
            generator = f"{s['processes'][GENERATOR]['cores']:.2f}"
            machine = s["processes"]["machine"]
            lines.append(
                f"| {target} | {s['rate']:g} | {s['achieved_rate']:g} | {_ms(lat.get('p50'))} | "
                f"{_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | {_ms(lat.get('p99.9'))} | "
                f"{_ms(lat.get('max'))} | {_ms(confirm.get('p50'))} / {_ms(confirm.get('p99'))} | "
                f"{s['lost']} | {s['duplicates']} | {s['out_of_order']} | "
                f"{sum(s['errors'].values())} | {generator}{' (bound)' if s['generator_bound'] else ''} | "
                f"{machine['cores']:.2f} ({machine['other_cores']:.2f}) | {'yes' if s['held'] else 'no'} |"
            )
    lines += ["", *cpu_table(name, by_target), ""]
    if name == "pairs":
        lines += cost_at_rate(by_target)
    return lines


def cpu_table(name: str, by_target: dict[str, Any]) -> list[str]:
    """CPU per message by process, and the broker's and the database's work per message, at each
    system's best step (its knee, or its first step)."""
    entries = []
    for target, result in by_target.items():
        best = _best(result["steps"])
        if best is not None:
            entries.append((f"{target} at {best['rate']:g}/s", best))
    lines = [
        "CPU per message sent, in microseconds, at each system's knee (or first step), and peak RSS:",
        "",
        *cost_table([(label, step["processes"]) for label, step in entries]),
        "",
        "The same steps: every process's CPU but the load generator's, and what the broker and the"
        " database counted, per message sent:",
        "",
        *work_table(entries, per_delivery=any(step["deliveries"] != step["sent"] for _, step in entries)),
    ]
    target_us = CPU_PER_DELIVERY_TARGET_US.get(name)
    if target_us is not None:
        judged = []
        for label, step in entries:
            cpu = system_cpu_us(step, step["deliveries"])
            if cpu is not None:
                judged.append(f"{label} {cpu:,.0f} µs ({'met' if cpu <= target_us else 'not met'})")
        lines += ["", f"Target: ≤ {target_us:,.0f} µs of CPU per delivery: {'; '.join(judged) or '–'}."]
    return lines


def work_table(entries: list[tuple[str, dict[str, Any]]], *, per_delivery: bool = False) -> list[str]:
    """Per entry (a label and a step or one-off result): CPU of the system (every process but the
    load generator) per message, and per delivery when a message has several recipients; broker
    publishes, routings, deliveries and acks, database rows and commits and WAL full-page images,
    per message."""
    delivery_head = " µs CPU / delivery |" if per_delivery else ""
    lines = [
        f"| system | µs CPU / message |{delivery_head} broker publishes / message | broker routed"
        " | broker deliveries | broker acks | rows written / message | commits / message"
        " | WAL full-page images / message |",
        "|---|---|" + "---|" * (8 if per_delivery else 7),
    ]
    errors = set()
    for label, step in entries:
        # Messages: a rate step's sent, an offline flush's backlog, a storm's (one per session).
        units = step.get("sent", step.get("backlog", step.get("sessions", 0)))
        cpu = system_cpu_us(step, units)
        cells = [label, "–" if cpu is None else f"{cpu:,.0f}"]
        if per_delivery:
            per = system_cpu_us(step, step.get("deliveries", units))
            cells.append("–" if per is None else f"{per:,.0f}")
        queued = step.get("broker_per_message")
        for key in ("publishes", "routed", "deliveries", "acks"):
            cells.append("–" if queued is None else f"{queued[key]:,.2f}")
        if queued is None:
            errors.add(step.get("broker_error", "not measured in this run"))
        written = step.get("database_per_message")
        for key in ("rows", "commits", "full_page_images"):
            cells.append("–" if written is None else f"{written[key]:,.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if errors:
        lines += ["", f"No broker figures: {'; '.join(sorted(errors))}."]
    return lines


def cost_at_rate(by_target: dict[str, Any]) -> list[str]:
    """Pairs at COST_RATE, for each system whose ladder ran that step (held or not): CPU per
    message by process and in all but the load generator, broker publishes and rows written per
    message, beside the targets."""
    runs = [(target, step) for target, result in by_target.items() if (step := _step_at(result, COST_RATE))]
    if not runs:
        return []
    lines = [
        f"#### Cost at {COST_RATE:g} msg/s",
        "",
        "| system | per message | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    for target, step in runs:
        label = f"{target} ({'held' if step['held'] else 'not held'})"
        for process, row in step["processes"].items():
            if process != GENERATOR and "cpu_us_per_message" in row:
                lines.append(f"| {label} | µs CPU, {process} | {row['cpu_us_per_message']:,.0f} | | |")
        cpu = system_cpu_us(step, step["sent"])
        publishes = (step.get("broker_per_message") or {}).get("publishes")
        rows = (step.get("database_per_message") or {}).get("rows")
        for what, value, target_value, unit in (
            ("µs CPU, every process but the load generator", cpu, COST_TARGETS["cpu_us"], "{:,.0f}"),
            ("broker publishes", publishes, COST_TARGETS["publishes"], "{:,.2f}"),
            ("database rows written", rows, COST_TARGETS["rows"], "{:,.2f}"),
        ):
            shown = "–" if value is None else unit.format(value)
            met = "–" if value is None else ("yes" if value <= target_value else "no")
            lines.append(f"| {label} | {what} | {shown} | ≤ {target_value:,g} | {met} |")
    lines.append("")
    for target, result in by_target.items():
        if _step_at(result, COST_RATE) is None and result.get("steps"):
            stopped = result["steps"][-1]["rate"]
            lines += [f"{target}: its ladder stopped at {stopped:g} msg/s, before {COST_RATE:g}.", ""]
    return lines


def cost_table(entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Per process of each entry (a label and its processes' figures): CPU and socket writes
    per message, cores, peak RSS."""
    lines = [
        "| system | process | µs CPU / message | writes / message | cores | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for label, processes in entries:
        for process, row in processes.items():
            if "cpu_seconds" not in row:
                continue
            cpu, writes = row.get("cpu_us_per_message", 0), row.get("writes_per_message")
            written = "–" if writes is None else f"{writes:,.1f}"
            lines.append(
                f"| {label} | {process} | {cpu:,.0f} | {written} | {row['cores']:.2f} |"
                f" {row.get('peak_rss_mb', '–')} |"
            )
    return lines


def once_section(name: str, by_target: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", "", "| system | figure | lost | dup | reordered |", "|---|---|---|---|---|"]
    for target, result in by_target.items():
        text, _ = headline(name, result)
        reordered = result.get("out_of_order", "–")
        lines.append(f"| {target} | {text} | {result['lost']} | {result['duplicates']} | {reordered} |")
    lines += [
        "",
        *cost_table([(target, result["processes"]) for target, result in by_target.items()]),
        "",
        "Every process's CPU but the load generator's, and what the broker and the database counted,"
        " per message delivered:",
        "",
        *work_table(list(by_target.items())),
        "",
    ]
    return lines


def idle_section(by_target: dict[str, Any]) -> list[str]:
    lines = [
        "### idle sessions (all on one gateway)",
        "",
        "| system | sessions | connected in s | gateway RSS MB | KB a session |",
        "|---|---|---|---|---|",
    ]
    for target, result in by_target.items():
        for s in result["steps"]:
            lines.append(
                f"| {target} | {s['sessions']:,} | {s['connect_seconds']} | {s['gateway_rss_mb']} | "
                f"{s['rss_per_session_kb']} |"
            )
    return [*lines, ""]


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    made = []
    for name in RATE_SCENARIOS:
        by_target = results["scenarios"].get(name)
        if not by_target:
            continue
        figure, (ladder_ax, spread_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
        for target, result in by_target.items():
            steps = result["steps"]
            rates = [s["rate"] for s in steps]
            for q, style in (("p50", "--"), ("p99", "-")):
                values = [s["latency_ms"].get(q, float("nan")) for s in steps]
                ladder_ax.plot(rates, values, style, marker="o", label=f"{target} {q}")
            best = _best(steps)
            if best is not None and best["latency_ms"].get("count"):
                xs, ys = percentile_curve(best["histogram"])
                spread_ax.plot(xs, ys, label=f"{target} at {best['rate']:g}/s")
        target_ms = next(iter(by_target.values()))["target_p99_ms"]
        if math.isfinite(target_ms):
            ladder_ax.axhline(target_ms, color="grey", linewidth=0.8, label="p99 target")
        ladder_ax.set(
            xlabel="offered rate, messages/s", ylabel="latency, ms", yscale="log", title=f"{name}: ladder"
        )
        spread_ax.set(
            xlabel="percentile",
            ylabel="latency, ms",
            yscale="log",
            xscale="logit",
            title=f"{name}: at the knee",
        )
        for ax in (ladder_ax, spread_ax):
            ax.grid(True, which="both", linewidth=0.3)
            ax.legend(fontsize="small")
        path = out / f"{name.replace(' ', '-')}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        made.append(path)
    return made


def percentile_curve(encoded: str) -> tuple[list[float], list[float]]:
    histogram = HdrHistogram.decode(encoded.encode())
    qs = [50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99]
    return [q / 100 for q in qs], [histogram.get_value_at_percentile(q) / 1000 for q in qs]


def write(results: dict[str, Any], out: Path, command: str, *, update_docs: bool) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = markdown(results, command)
    images = plots(results, out)
    links = "\n".join(f"![{p.stem}]({p.name})" for p in images)
    (out / "results.md").write_text(f"# Benchmark results\n\n{text}\n{links}\n")
    if update_docs and DOCS.exists():
        # Links from docs/ to wherever the results went (--out may be anywhere).
        relative = os.path.relpath(out.resolve(), DOCS.parent)
        doc_links = "\n".join(f"![{p.stem}]({relative}/{p.name})" for p in images)
        docs = DOCS.read_text()
        head, _, rest = docs.partition(START)
        _, _, tail = rest.partition(END)
        DOCS.write_text(f"{head}{START}\n{text}\n{doc_links}\n{END}{tail}")
    return text
