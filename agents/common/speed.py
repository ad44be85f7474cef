"""``amortize bench speed``: problems per second of every solver against its compiled peer, by batch size.

Each domain that offers speed rows measures them with ``interleaved_medians`` (device synchronized, warm-up
first, median of repeats, peers interleaved with ours in every repeat so that load on the machine hits both);
this module renders the table, the JSON and the plot. A row is one solver on one batch: its seconds for the
whole batch, the peer's seconds on the same problems in the same run, and the ratio of the two.
"""

from __future__ import annotations

import os
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from agents.common.plots import save_with_legend_below
from agents.common.tables import format_table
from learned_optimizers.common.timing import synchronize

#: batch sizes of the full table; ``--quick`` keeps the first three
BATCH_SIZES = (1, 16, 256, 4096)


@dataclass(frozen=True)
class SpeedSettings:
    """What every domain's speed rows are measured with."""

    batch_sizes: tuple[int, ...] = BATCH_SIZES
    device: str = "cpu"
    repeats: int = 3
    seed: int = 0
    #: a peer that loops one problem at a time is timed on at most this many of the batch's problems and its
    #: seconds scaled to the batch (the row says how many it timed)
    peer_max_problems: int = 1024
    #: also time the opt-in float32 form of the solvers that have one
    float32: bool = False

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"--batch-sizes {self.batch_sizes}: give positive integers, e.g. 1,16,256")
        if self.peer_max_problems < 1:
            raise ValueError(f"--peer-max-problems {self.peer_max_problems}: at least 1")
        if self.repeats < 1:
            raise ValueError(f"--repeats {self.repeats}: at least 1")


@dataclass
class SpeedRow:
    domain: str
    problems: str  # the problem set, e.g. "random n=50"
    solver: str
    peer: str
    device: str
    batch: int
    seconds: float  # the whole batch, median over repeats (set-up and a model's forward pass included)
    peer_seconds: float  # the peer on the same problems (scaled from ``peer_timed`` problems if fewer)
    peer_timed: int
    median_iterations: float
    peer_median_iterations: float
    solved: int
    peer_solved: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def problems_per_s(self) -> float:
        return self.batch / self.seconds

    @property
    def speedup(self) -> float:
        """> 1: faster than the peer on the clock."""
        return self.peer_seconds / self.seconds


def interleaved_medians(fns: dict[str, Callable[[], Any]], device: str, repeats: int,
                        cold: tuple[str, ...] = ()) -> dict[str, tuple[float, Any]]:
    """name -> (median seconds, last result): each function warmed up once (but those in ``cold``: a compiled
    peer has nothing to warm), then ``repeats`` rounds that call them in turn (so a load on the machine falls
    on all of them alike), the device synchronized around each."""
    for name, fn in fns.items():
        if name not in cold:
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(torch.device(device))
            t0 = time.perf_counter()
            results[name] = fn()
            synchronize(torch.device(device))
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


def speed_table(rows: list[SpeedRow], fmt: str | None = None) -> str:
    """One line per row, at most ~110 columns; the peers and how many problems they were timed on below it."""
    headers = ["problems", "solver", "dev", "batch", "prob/s", "ms/prob", "peer prob/s", "speed-up", "iters (peer)",
               "solved (peer)"]
    body = []
    for r in rows:
        scaled = "*" if r.peer_timed < r.batch else ""
        body.append([r.problems, r.solver, r.device, r.batch, f"{r.problems_per_s:.1f}", f"{1e3 * r.seconds / r.batch:.2f}",
                     f"{r.batch / r.peer_seconds:.1f}{scaled}", f"{r.speedup:.2f}x",
                     f"{r.median_iterations:g} ({r.peer_median_iterations:g})",
                     f"{100 * r.solved / r.batch:.0f}% ({100 * r.peer_solved / r.peer_timed:.0f}%)"])
    looped = ", ".join(dict.fromkeys(r.peer for r in rows if not r.extra.get("batched_peer")))
    batched = ", ".join(dict.fromkeys(r.peer for r in rows if r.extra.get("batched_peer")))
    timed = sorted({r.peer_timed for r in rows if r.peer_timed < r.batch})
    notes = [f"peers, looped one problem at a time, at each row's eps: {looped}"] if looped else []
    if batched:
        notes.append(f"peers batched like ours, on the same device: {batched}")
    notes = [textwrap.fill(note, 110, subsequent_indent="  ") for note in notes]
    if timed:
        notes.append(f"* the peer timed on the first {', '.join(map(str, timed))} problems of the batch, scaled to it")
    for solver, rule in dict.fromkeys((r.solver, r.extra["seconds_rule"]) for r in rows if "seconds_rule" in r.extra):
        notes.append(f"{solver}, and its peer: {rule}")
    return format_table(headers, body, fmt) + "\n" + "\n".join(notes)


def machine_line(device: str) -> str:
    """What the figures were measured on: the device, torch's threads and the CPU count."""
    return (f"device {device}, torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}; looped peers single-threaded; "
            "seconds: median of repeats, set-up and any model's forward pass included")


def speed_record(rows: list[SpeedRow], settings: SpeedSettings) -> dict[str, Any]:
    return {"settings": asdict(settings), "machine": machine_line(settings.device), "torch": torch.__version__,
            "rows": [{**asdict(r), "problems_per_s": r.problems_per_s, "speedup": r.speedup} for r in rows]}


def plot_speed(path: Path, rows: list[SpeedRow], title: str) -> Path:
    """Problems per second against batch size, one line per (problem set, solver) and its peer dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    lines: dict[tuple[str, str], list[SpeedRow]] = {}
    for r in rows:
        lines.setdefault((r.problems, r.solver), []).append(r)
    peers_drawn: set[tuple[str, str]] = set()
    for (problems, solver), rs in lines.items():
        rs = sorted(rs, key=lambda r: r.batch)
        (line,) = ax.plot([r.batch for r in rs], [r.problems_per_s for r in rs], marker="o", label=f"{solver}, {problems}")
        key = (problems, rs[0].peer)
        if key not in peers_drawn:
            peers_drawn.add(key)
            ax.plot([r.batch for r in rs], [r.batch / r.peer_seconds for r in rs], linestyle="--", marker="x",
                    color=line.get_color(), label=f"{rs[0].peer} (peer), {problems}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (problems solved together)")
    ax.set_ylabel("problems per second")
    ax.grid(True, which="both", alpha=0.3)
    return save_with_legend_below(fig, ax, path, title)


def add_speed_arguments(parser) -> None:
    parser.add_argument("--batch-sizes", help=f"comma-separated (default {','.join(map(str, BATCH_SIZES))})")
    parser.add_argument("--quick", action="store_true", help="batch sizes 1,16,256 and 2 repeats: the GPU check's table")
    parser.add_argument("--repeats", type=int, help="timed repeats per row, median reported (default 3)")
    parser.add_argument("--domains", help="comma-separated subset of the domains that offer speed rows")
    parser.add_argument("--peer-max-problems", type=int, default=1024,
                        help="a looped peer times at most this many of a batch's problems, scaled to the batch")
    parser.add_argument("--float32", action="store_true", help="add rows for the opt-in float32 form of our core")


def bench_speed(providers: dict[str, Callable[[SpeedSettings], list[SpeedRow]]], settings: SpeedSettings,
                name: str, root: Any, only: list[str] | None = None) -> dict[str, Any]:
    """Measure every provider's rows (``only``: a subset by domain name), then the table, JSON and plot."""
    from agents.common.runs import RunDir

    unknown = sorted(set(only or ()) - set(providers))
    if unknown:
        raise ValueError(f"--domains {','.join(unknown)}: no speed rows there; allowed: {', '.join(providers)}")
    print(machine_line(settings.device))
    rows: list[SpeedRow] = []
    for domain, provider in providers.items():
        if only and domain not in only:
            continue
        print(f"{domain}:")
        rows += provider(settings)
    out = RunDir.create(name, root)
    table = speed_table(rows) + "\n\n" + machine_line(settings.device)
    record = speed_record(rows, settings)
    path = out.write_json("speed.json", record)
    plot = plot_speed(out.plots / "speed.png", rows, f"{out.name}: problems per second by batch size ({settings.device})")
    return {**record, "table": table, "paths": {"json": str(path), "plots": [str(plot)], "tensorboard": str(out.path)}}


def speed_settings(args: Any, device: str) -> SpeedSettings:
    """The settings the CLI's flags ask for."""
    from agents.common.cli_args import csv_list

    sizes = csv_list(args.batch_sizes, int) if args.batch_sizes else (BATCH_SIZES[:3] if args.quick else BATCH_SIZES)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    return SpeedSettings(tuple(sizes), device, repeats, args.seed if args.seed is not None else 0,
                         args.peer_max_problems, args.float32)
