"""Where the gateway's event loop is held, as the tail benchmark reads it: the loop-lag
sampler's windows (``Holds``), py-spy's samples by frame (``Profile``) and the table of the
steps timed by coroutine. Pure: bench/tail.py gathers the figures, bench/tail_report.py puts
these sections in its report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bench.tables import table


@dataclass(frozen=True)
class Holds:
    """One window's loop holds, read from the sampler's snapshot: the 1 ms timer's lateness
    (late), the loop thread's CPU time between two wake-ups (busy) and the collector's pauses."""

    samples: int
    late_02: int
    late_1: int
    late_max_ms: float
    busy_02: int
    busy_1: int
    busy_max_ms: float
    gc_above_1: int
    gc_max_ms: float
    gc_max_generation: str | None


def _counts(figures: dict[str, Any]) -> tuple[int, int, float]:
    above = figures.get("above_ms", {})
    return int(above.get("0.2", 0)), int(above.get("1", 0)), float(figures.get("max_ms", 0.0))


def holds(snapshot: dict[str, Any] | None) -> Holds | None:
    if not snapshot:
        return None
    late, busy = snapshot.get("lag", {}), snapshot.get("busy", {})
    gc_above_1, gc_max, gc_gen = 0, 0.0, None
    for generation, figures in snapshot.get("gc", {}).items():
        gc_above_1 += int(figures.get("above_ms", {}).get("1", 0))
        if float(figures.get("max_ms", 0.0)) > gc_max:
            gc_max, gc_gen = float(figures["max_ms"]), generation
    return Holds(
        int(late.get("samples", 0)),
        *_counts(late),
        *_counts(busy),
        gc_above_1=gc_above_1,
        gc_max_ms=gc_max,
        gc_max_generation=gc_gen,
    )


@dataclass
class Profile:
    """py-spy's samples of one configuration's gateway over a c=50 run, by frame."""

    config: str
    samples: int = 0
    own: list[tuple[str, float]] = field(default_factory=list)
    """The innermost frames (where the time is spent), by share of samples."""
    inclusive: list[tuple[str, float]] = field(default_factory=list)
    """The project's functions (gateway/, capture/, router/ ...) by share of samples that
    pass through them."""
    threads: list[tuple[str, float]] = field(default_factory=list)
    """By thread (py-spy's ``--threads`` root frame; numbered threads of one target as one)."""
    error: str | None = None


_THREAD = re.compile(r"^thread \(\w+\): ")
_NUMBERED = re.compile(r"^(Thread-)\d+")


def profile_from_collapsed(
    config: str, text: str, own_packages: tuple[str, ...], top: int = 12
) -> Profile:
    """Aggregate py-spy's ``--format raw`` output (``frame;frame;... count`` per line)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if frames[0].startswith("thread (") and len(frames) > 1:
            thread = _THREAD.sub("", frames.pop(0))
            thread = _NUMBERED.sub(r"\1*", thread)
            threads[thread] = threads.get(thread, 0) + count
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + count
        seen: set[str] = set()
        for frame in frames:
            if frame in seen or not any(f"{package}/" in frame for package in own_packages):
                continue
            seen.add(frame)
            inclusive[frame] = inclusive.get(frame, 0) + count
    if total == 0:
        return Profile(config, error="no samples")

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
        return [(frame, count / total) for frame, count in ordered]

    return Profile(config, total, ranked(own), ranked(inclusive), ranked(threads))


def profile_lines(profile: Profile) -> list[str]:
    if profile.error is not None:
        return ["", f"py-spy on ({profile.config}): not measured ({profile.error})."]
    lines = [
        "",
        f"py-spy on the {profile.config} gateway during a c=50 run ({profile.samples:,} samples, "
        "`--nonblocking`; samples of an idle thread, such as the loop waiting in epoll, left out): "
        "the innermost frames by share of samples,",
        "",
    ]
    lines += table(("frame (innermost)", "share"), [[f"`{f}`", f"{s:.1%}"] for f, s in profile.own])
    if profile.threads:
        lines += ["", "by thread:", ""]
        lines += table(("thread", "share"), [[f"`{t}`", f"{s:.1%}"] for t, s in profile.threads])
    if profile.inclusive:
        lines += ["", "and the project's functions by share of samples that pass through them:", ""]
        lines += table(
            ("function", "share"), [[f"`{f}`", f"{s:.1%}"] for f, s in profile.inclusive]
        )
    return lines


STEPS_SHOWN = 12


def steps_rows(steps: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Per coroutine (the longest step at c=50 first): steps over 0.2 / 1 ms, the longest."""
    names: dict[str, float] = {}
    for window in ("c50", "c1"):
        for name, figures in steps.get(window, {}).get("steps", {}).items():
            names.setdefault(name, float(figures["wall"]["max_ms"]) if window == "c50" else -1.0)
    ordered = sorted(names, key=lambda name: (-names[name], name))[:STEPS_SHOWN]
    rows: list[list[str]] = []
    for name in ordered:
        row = [f"`{name}`"]
        for window in ("c1", "c50"):
            figures = steps.get(window, {}).get("steps", {}).get(name)
            if figures is None:
                row += ["-", "-", "-"]
                continue
            wall, cpu, own = figures["wall"], figures["cpu"], figures.get("own", {})
            above = wall.get("above_ms", {})
            row += [
                f"{wall['samples']:,}: {above.get('0.2', 0):,} / {above.get('1', 0):,}",
                f"{wall['max_ms']:.2f} ms ({cpu['max_ms']:.2f})",
                "-"
                if not own
                else f"{own.get('above_ms', {}).get('1', 0):,}, {own['max_ms']:.2f} ms",
            ]
        rows.append(row)
    return rows


def steps_lines(steps: dict[str, dict[str, Any]]) -> list[str]:
    calls = {window: steps.get(window, {}).get("calls", 0) for window in ("c1", "c50")}
    return [
        "",
        "Which work holds the loop: the everything-on gateway once more, with every task's steps "
        "timed (gateway/looplag.py, `GATEWAY_LOOPLAG_STEPS`: from a task's resumption to its "
        f"next suspension), in the same two windows ({calls['c1']:,} and {calls['c50']:,} "
        "gateway calls). Per coroutine: its steps, of which over 0.2 ms / over 1 ms, and the "
        "longest (its CPU time in brackets); then, less the collections that ran inside a step "
        "(a step triggers them; they are not its own work), the steps still over 1 ms and the "
        "longest. The longest at c=50 first. Callbacks that are not a task's step (protocols, "
        "timers) are not in this table.",
        "",
        *table(
            (
                "coroutine",
                "c=1: steps: > 0.2 / > 1 ms",
                "c=1: longest (CPU)",
                "c=1: less collections: > 1 ms, longest",
                "c=50: steps: > 0.2 / > 1 ms",
                "c=50: longest (CPU)",
                "c=50: less collections: > 1 ms, longest",
            ),
            steps_rows(steps),
        ),
    ]
