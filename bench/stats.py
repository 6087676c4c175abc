"""What every benchmark under bench/ shares: the registry, alternating rounds, distributions, ratios with
their spread, bimodality, the JSON figures and the picture.

A benchmark is a function registered with `@benchmark("name", "one line")` in any `bench/*.py` module
whose name does not start with `_`; it receives a `Run` and records figures on it:

    @benchmark("checks", "connection checks against the lab, console vs bare client")
    def checks(run: Run) -> None:
        run.compare("kafka", {"check": ours, "bare": bare}, target=1.5)

`python -m bench` (`make bench`) imports every such module and runs every registered benchmark; each one
prints its figures, writes `bench/results/<name>.json` and draws `bench/results/<name>.png`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

REGISTRY: dict[str, Benchmark] = {}


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its name, one line of description and the function that runs it."""

    name: str
    title: str
    run: Callable[[Run], None]
    module: str


def benchmark(name: str, title: str) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    """Register `fn(run)` as the benchmark `name` (the one line a new benchmark adds)."""
    def register(fn: Callable[[Run], None]) -> Callable[[Run], None]:
        REGISTRY[name] = Benchmark(name, title, fn, fn.__module__)
        return fn
    return register


def discover() -> dict[str, Benchmark]:
    """Import every `bench/*.py` module not starting with `_`; the benchmarks they registered."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for path in sorted(BENCH.glob("*.py")):
        if not path.stem.startswith("_") and path.stem != "stats":
            import_module(f"bench.{path.stem}")
    return dict(REGISTRY)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q`-quantile (0..1) of sorted `ordered`, interpolated linearly between ranks."""
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Modes:
    """Two clusters found in a distribution: where each sits and what share is in the upper one."""

    low: float
    high: float
    share_high: float
    gap_from: float
    gap_to: float

    def describe(self, unit: str) -> str:
        """One line for the printout."""
        return (f"BIMODAL: {1 - self.share_high:.0%} near {self.low:.3g} {unit}, "
                f"{self.share_high:.0%} near {self.high:.3g} {unit}, no sample between "
                f"{self.gap_from:.3g} and {self.gap_to:.3g} {unit}: quote both modes, not the median")


def find_modes(samples: Iterable[float], min_share: float = 0.05, min_factor: float = 1.8) -> Modes | None:
    """Two modes when the sorted samples have one gap (on a log scale) at least `min_factor` wide, wider
    than either side's own spread, with at least `min_share` of the samples on each side; else None."""
    xs = sorted(x for x in samples if x > 0)
    n = len(xs)
    k = max(2, math.ceil(min_share * n))
    if n < 2 * k or n < 10:
        return None
    logs = [math.log(x) for x in xs]
    gap, at = max((logs[i + 1] - logs[i], i) for i in range(k - 1, n - k))
    lower, upper = xs[: at + 1], xs[at + 1:]

    def spread(part: list[float]) -> float:
        return math.log(percentile(part, 0.9)) - math.log(percentile(part, 0.1))

    if gap < math.log(min_factor) or gap < max(spread(lower), spread(upper)):
        return None
    return Modes(statistics.median(lower), statistics.median(upper), len(upper) / n, lower[-1],
                 upper[0])


@dataclass
class Distribution:
    """The samples of one side: n, min, p50, p90, p99, max and the modes when there are two."""

    samples: list[float]

    def summary(self) -> dict[str, Any]:
        """The figures as a dict (the JSON form), samples included."""
        xs = sorted(self.samples)
        modes = find_modes(xs)
        return {"n": len(xs), "min": xs[0] if xs else None, "p50": percentile(xs, 0.5),
                "p90": percentile(xs, 0.9), "p99": percentile(xs, 0.99), "max": xs[-1] if xs else None,
                "mean": statistics.fmean(xs) if xs else None,
                "bimodal": None if modes is None else modes.__dict__, "samples": self.samples}


@dataclass
class Comparison:
    """Several sides measured in alternating rounds; the ratio of the first two, round by round."""

    label: str
    unit: str
    sides: dict[str, list[list[float]]]          # side -> rounds -> samples
    ratio_of: tuple[str, str]
    target: float | None = None                 # ratio target
    higher_is_better: bool = False             # for throughput: the target is a minimum

    def distribution(self, side: str) -> Distribution:
        """Every sample of `side`, all rounds together."""
        return Distribution([x for chunk in self.sides[side] for x in chunk])

    def round_ratios(self) -> list[float]:
        """Per round: median of the first side over median of the second."""
        a, b = self.ratio_of
        return [statistics.median(x) / statistics.median(y)
                for x, y in zip(self.sides[a], self.sides[b]) if x and y and statistics.median(y) > 0]

    def ratio(self) -> dict[str, Any]:
        """The ratio with its spread over rounds (median, min, max, p10, p90 of the per-round ratios)."""
        per = self.round_ratios()
        ordered = sorted(per)
        met = None
        if self.target is not None and per:
            median = statistics.median(per)
            met = median >= self.target if self.higher_is_better else median <= self.target
        return {"of": list(self.ratio_of), "per_round": per, "rounds": len(per),
                "median": statistics.median(per) if per else None,
                "min": ordered[0] if per else None, "max": ordered[-1] if per else None,
                "p10": percentile(ordered, 0.1), "p90": percentile(ordered, 0.9),
                "target": self.target, "target_is_minimum": self.higher_is_better, "met": met}

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"label": self.label, "unit": self.unit,
                "sides": {side: self.distribution(side).summary() for side in self.sides},
                "ratio": self.ratio()}


def fmt(value: float | None) -> str:
    """A figure with about three significant digits, never in exponent form."""
    if value is None or math.isnan(value):
        return "-"
    size = abs(value)
    return f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}" \
        if size >= 1 else f"{value:.3f}"


def timed_ms(fn: Callable[[], Any]) -> float:
    """Milliseconds one call of `fn` takes."""
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000.0


@dataclass
class Load:
    """What `hammer` measured: every answered request's latency, and the errors (an unexpected
    status, a refused or timed-out connection)."""

    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        """Answered requests per second."""
        return len(self.latencies_ms) / self.seconds

    def raise_errors(self) -> Load:
        """Self, or RuntimeError naming the first error."""
        if self.errors:
            raise RuntimeError(self.errors[0])
        return self


def hammer(port: int, path: str, seconds: float, threads: int = 4,
           headers: Mapping[str, str] | None = None, ok: Iterable[int] = (200,),
           timeout: float = 10, host: str = "127.0.0.1") -> Load:
    """`threads` clients, each on its own keep-alive connection, GET `path` as fast as they are
    answered for `seconds`; every answer's latency is kept, and a status not in `ok` or a failed
    connection is an error (the client reconnects and goes on)."""
    wanted = set(ok)
    stop = time.monotonic() + seconds
    load = Load(seconds)
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        mine: list[float] = []
        wrong: list[str] = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers=dict(headers or {}))
                answer = conn.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException) as exc:
                wrong.append(f"{path}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
                continue
            mine.append((time.perf_counter() - started) * 1000.0)
            if answer.status not in wanted:
                wrong.append(f"{path}: {answer.status}")
            if answer.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.close()
        with lock:
            load.latencies_ms.extend(mine)
            load.errors.extend(wrong)

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return load


class Run:
    """What a benchmark records its figures on; prints each as it is measured."""

    def __init__(self, bench: Benchmark, scale: float = 1.0, out: Any = None) -> None:
        self.bench = bench
        self.scale = scale
        self.out = out or sys.stdout
        self.comparisons: list[Comparison] = []
        self.values: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.started = dt.datetime.now(dt.UTC)

    def n(self, count: int) -> int:
        """`count` scaled by --scale (at least 1)."""
        return max(1, round(count * self.scale))

    def say(self, text: str = "") -> None:
        """Print one line of the report."""
        print(text, file=self.out, flush=True)

    def compare(self, label: str, sides: Mapping[str, Callable[[], Any]], *, rounds: int = 10,
                per_round: int = 10, warmup: int = 1, target: float | None = None,
                ratio_of: tuple[str, str] | None = None,
                sample: Callable[[Callable[[], Any]], float] = timed_ms, unit: str = "ms",
                higher_is_better: bool = False) -> Comparison:
        """Measure every side `per_round` times per round, the sides' order alternating from one round to
        the next (A B, B A, …), after `warmup` unrecorded calls of each; print and record the figures."""
        names = list(sides)
        for name in names:
            for _ in range(warmup):
                sides[name]()
        collected: dict[str, list[list[float]]] = {name: [] for name in names}
        for r in range(self.n(rounds)):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                collected[name].append([sample(sides[name]) for _ in range(per_round)])
        comparison = Comparison(label, unit, collected, ratio_of or (names[0], names[1]), target,
                                higher_is_better)
        self.comparisons.append(comparison)
        self.print_comparison(comparison)
        return comparison

    def distributions(self, label: str, sides: Mapping[str, Sequence[float]], unit: str = "ms"
                      ) -> Comparison:
        """Record and print distributions measured in one go each (not in alternating rounds, e.g.
        latencies while a load ran): one round per side; the ratio is of the first two."""
        names = list(sides)
        comparison = Comparison(label, unit, {name: [list(sides[name])] for name in names},
                                (names[0], names[1 if len(names) > 1 else 0]))
        self.comparisons.append(comparison)
        self.print_comparison(comparison)
        return comparison

    def value(self, label: str, number: float, unit: str = "", target: str = "",
              met: bool | None = None) -> None:
        """Record and print one figure that is not a distribution (an overrun, a derived ratio)."""
        self.values.append({"label": label, "value": number, "unit": unit, "target": target, "met": met})
        verdict = "" if met is None else ("  met" if met else "  MISSED")
        self.say(f"  {label}: {fmt(number)}{(' ' + unit) if unit else ''}"
                 f"{('  (target ' + target + ')') if target else ''}{verdict}")

    def note(self, text: str) -> None:
        """Record and print a remark."""
        self.notes.append(text)
        self.say(f"  note: {text}")

    def print_comparison(self, c: Comparison) -> None:
        """The comparison's lines: one per side, then the ratio with its spread."""
        self.say(f"  {c.label}")
        width = max(len(side) for side in c.sides)
        for side in c.sides:
            s = c.distribution(side).summary()
            self.say(f"    {side:<{width}}  n={s['n']:<4} p50 {fmt(s['p50']):>6}  p90 {fmt(s['p90']):>6}  "
                     f"p99 {fmt(s['p99']):>6}  min {fmt(s['min']):>6}  max {fmt(s['max']):>6} {c.unit}")
            if s["bimodal"]:
                self.say(f"    {'':<{width}}  !! {Modes(**s['bimodal']).describe(c.unit)}")
        r = c.ratio()
        if r["median"] is None:
            return
        a, b = c.ratio_of
        target = ""
        if c.target is not None:
            target = (f"  (target {'≥' if c.higher_is_better else '≤'} {c.target:g}: "
                      f"{'met' if r['met'] else 'MISSED'})")
        self.say(f"    ratio {a}/{b} {r['median']:.2f}, spread over {r['rounds']} rounds "
                 f"{r['min']:.2f}–{r['max']:.2f} (p10–p90 {r['p10']:.2f}–{r['p90']:.2f}){target}")

    def as_dict(self) -> dict[str, Any]:
        """The whole run as JSON."""
        return {"benchmark": self.bench.name, "title": self.bench.title,
                "started": self.started.isoformat(),
                "finished": dt.datetime.now(dt.UTC).isoformat(),
                "machine": {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "load": os.getloadavg()},
                "scale": self.scale,
                "comparisons": [c.as_dict() for c in self.comparisons],
                "values": self.values, "notes": self.notes}


def write_json(run: Run, directory: Path = RESULTS) -> Path:
    """Write the run's figures to `directory/<name>.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run.bench.name}.json"
    path.write_text(json.dumps(run.as_dict(), indent=1, default=float))
    return path


def plot(run: Run, directory: Path = RESULTS) -> Path | None:
    """Draw every comparison of the run as one panel of dots per side (log scale, p50 and p90 marked):
    the shape of each distribution, a second mode included, is visible at a glance."""
    if not run.comparisons:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")

    panels = run.comparisons
    heights = [0.5 + 0.28 * len(c.sides) for c in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.6 + 0.55 * len(panels) + sum(heights)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    colours = ["#1f6fb4", "#e07b00", "#2a9d3c", "#b03060", "#6a4c9c"]
    for ax, c in zip(axes[:, 0], panels):
        names = list(c.sides)
        for i, side in enumerate(names):
            xs = c.distribution(side).samples
            ys = [i + ((k * 0.6180339887) % 1 - 0.5) * 0.5 for k in range(len(xs))]
            ax.scatter(xs, ys, s=7, alpha=0.55, color=colours[i % len(colours)], linewidths=0)
            ordered = sorted(xs)
            for q, style in ((0.5, "-"), (0.9, ":")):
                v = percentile(ordered, q)
                ax.plot([v, v], [i - 0.38, i + 0.38], style, color="black", linewidth=1.3)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.invert_yaxis()
        if all(x > 0 for side in names for x in c.distribution(side).samples):
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
        r = c.ratio()
        ratio = (f"  {c.ratio_of[0]}/{c.ratio_of[1]} {r['median']:.2f} "
                 f"[{r['min']:.2f}–{r['max']:.2f}, {r['rounds']} rounds]") if r["median"] else ""
        ax.set_title(f"{c.label}{ratio}", fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", which="both", alpha=0.25)
        ax.set_xlabel(c.unit, fontsize=8, labelpad=1)
    fig.suptitle(f"{run.bench.title} — every sample; solid bar p50, dotted bar p90", fontsize=10)
    fig.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run.bench.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_benchmarks(names: Sequence[str] = (), scale: float = 1.0,
                   directory: Path = RESULTS) -> list[Run]:
    """Run the named benchmarks (all when none is named), each followed by its JSON and picture."""
    registry = discover()
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(registry)}")
    runs = []
    for name in names or list(registry):
        bench = registry[name]
        run = Run(bench, scale)
        run.say(f"== {bench.name}: {bench.title}")
        started = time.monotonic()
        bench.run(run)
        json_path = write_json(run, directory)
        picture = plot(run, directory)
        run.say(f"  ({time.monotonic() - started:.0f} s; figures {json_path.relative_to(ROOT)}"
                f"{'; picture ' + str(picture.relative_to(ROOT)) if picture else ''})")
        run.say()
        runs.append(run)
    return runs


def main(argv: Sequence[str] | None = None, only: str | None = None) -> None:
    """Command line of `python -m bench [NAME…]` and of each benchmark module run as a script."""
    parser = argparse.ArgumentParser(description="Run the benchmarks under bench/ (all by default).")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every round count by this (0.2 for a quick look)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for bench in discover().values():
            print(f"{bench.name:<10} {bench.title}  ({bench.module})")
        return
    run_benchmarks(args.names or ([only] if only else []), args.scale)
