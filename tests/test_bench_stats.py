"""bench/stats.py: percentiles, bimodality, alternating rounds, ratios with their spread, JSON and picture
(the benchmarks themselves run by hand with `make bench`, never here)."""
from __future__ import annotations

import json
import random

import pytest

from bench import stats


def test_percentile_interpolates() -> None:
    xs = [float(x) for x in range(1, 101)]
    assert stats.percentile(xs, 0.5) == pytest.approx(50.5)
    assert stats.percentile(xs, 0.9) == pytest.approx(90.1)
    assert stats.percentile(xs, 0.0) == 1 and stats.percentile(xs, 1.0) == 100


def test_two_modes_are_found_with_their_shares() -> None:
    rng = random.Random(7)
    samples = [rng.uniform(1.1, 3.0) for _ in range(72)] + [rng.uniform(52, 57) for _ in range(28)]
    rng.shuffle(samples)
    modes = stats.find_modes(samples)
    assert modes is not None
    assert 1.1 < modes.low < 3 and 52 < modes.high < 57 and modes.share_high == pytest.approx(0.28)
    assert modes.gap_from <= 3.0 and modes.gap_to >= 52
    assert "BIMODAL" in modes.describe("ms") and "28%" in modes.describe("ms")


@pytest.mark.parametrize("samples", [
    [random.Random(1).lognormvariate(1, 0.4) for _ in range(200)],       # one mode with a long tail
    [2.0 + i * 0.01 for i in range(100)],                                  # flat
    [2.0] * 97 + [60.0] * 3,                                               # 3 % outliers are not a mode
    [1.0, 50.0] * 3,                                                       # too few samples to tell
])
def test_one_mode_is_not_called_bimodal(samples: list[float]) -> None:
    assert stats.find_modes(samples) is None


def test_compare_alternates_sides_and_gives_the_ratio_per_round(tmp_path) -> None:
    calls: list[str] = []
    bench = stats.Benchmark("unit", "unit test", lambda run: None, __name__)
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    run = stats.Run(bench, out=Out())
    values = {"a": iter([2.0] * 4 + [4.0] * 4 + [2.0] * 4), "b": iter([1.0] * 12)}
    comparison = run.compare("pair", {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                             rounds=3, per_round=4, warmup=0, target=3,
                             sample=lambda fn: (fn(), next(values[calls[-1]]))[1])
    assert calls == ["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4 + ["a"] * 4 + ["b"] * 4
    assert comparison.round_ratios() == [2.0, 4.0, 2.0]
    ratio = comparison.ratio()
    assert (ratio["median"], ratio["min"], ratio["max"], ratio["rounds"], ratio["met"]) == (2.0, 2.0, 4.0, 3, True)
    summary = comparison.distribution("a").summary()
    assert summary["n"] == 12 and summary["min"] == 2 and summary["max"] == 4
    text = "".join(lines)
    assert "ratio a/b 2.00, spread over 3 rounds 2.00–4.00" in text and "target ≤ 3: met" in text

    path = stats.write_json(run, tmp_path)
    data = json.loads(path.read_text())
    assert data["benchmark"] == "unit" and data["comparisons"][0]["ratio"]["per_round"] == [2.0, 4.0, 2.0]
    assert len(data["comparisons"][0]["sides"]["a"]["samples"]) == 12
    picture = stats.plot(run, tmp_path)
    assert picture is not None and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_discovery_registers_every_benchmark_module_without_running_it() -> None:
    registry = stats.discover()
    assert {"checks", "impact", "load"} <= set(registry)
    assert registry["checks"].module == "bench.checks"


def test_make_bench_runs_the_runner_and_the_runner_lists_benchmarks() -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    dry = subprocess.run(["make", "-n", "bench", "BENCH=checks --scale 0.2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0 and "-m bench checks --scale 0.2" in dry.stdout
    listed = subprocess.run([sys.executable, "-m", "bench", "--list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0
    assert {line.split()[0] for line in listed.stdout.splitlines()} >= {"checks", "impact", "startup"}


def test_hammer_counts_answers_latencies_and_errors() -> None:
    """The shared load driver of the benchmarks, against a real little HTTP server: every answer's
    latency, the unexpected statuses as errors, a refused connection as an error too."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            code = 200 if self.path == "/ok" else 503
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        good = stats.hammer(port, "/ok", 0.3, threads=2)
        assert good.latencies_ms and not good.errors and good.per_second > 0
        bad = stats.hammer(port, "/down", 0.2, threads=1)
        assert bad.errors and set(bad.errors) == {"/down: 503"}
        assert not stats.hammer(port, "/down", 0.2, threads=1, ok=(503,)).errors
        with pytest.raises(RuntimeError, match="503"):
            bad.raise_errors()
    finally:
        server.shutdown()
        server.server_close()
    refused = stats.hammer(port, "/ok", 0.1, threads=1)
    assert refused.errors and "ConnectionRefusedError" in refused.errors[0]


def test_distributions_are_recorded_and_printed(tmp_path) -> None:
    import io

    out = io.StringIO()
    run = stats.Run(stats.Benchmark("t", "t", lambda r: None, "m"), out=out)
    run.distributions("latency", {"idle": [1.0, 2.0, 3.0], "busy": [2.0, 4.0, 6.0]})
    assert "idle" in out.getvalue() and "busy" in out.getvalue()
    assert run.as_dict()["comparisons"][0]["sides"]["busy"]["p50"] == 4.0
