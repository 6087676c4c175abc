"""Connection-check benchmark against the local broker lab (`make brokers` first).

    .venv/bin/python bench/checks.py [--repeat 15]

Prints, in one run:
1. per protocol, the median latency of the console's check and of the bare client library doing the
   same minimal operation (target ratio ≤ 1.5);
2. the wall time of checking all five concurrently over the slowest single check (target ≤ 1.3);
3. the overrun of a check against a blackholed port over its timeout (target ≤ 10 %);
4. /readyz requests per second against a trivial Flask route under the same server (target ≥ 0.8).
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def lab() -> dict:
    import brokerlab

    data = brokerlab.load(os.environ.get("BROKERLAB_DIR") or None)
    if data is None:
        sys.exit("The broker lab is not running: make brokers")
    return data


def configs(data: dict):
    from console.brokers.base import BrokerConfig

    b = data["brokers"]
    h = "127.0.0.1"
    return {
        "kafka": BrokerConfig("kafka", h, b["kafka"]["plain"], servers=((h, b["kafka"]["plain"]),),
                              options={"security_protocol": "PLAINTEXT", "client_id": "bench"}),
        "pulsar": BrokerConfig("pulsar", h, b["pulsar"]["plain"],
                               url=f"pulsar://{h}:{b['pulsar']['plain']}",
                               options={"topic": "persistent://public/default/bench"}),
        "mqtt": BrokerConfig("mqtt", h, b["mqtt"]["plain"], options={"client_id": "bench"}),
        "nats": BrokerConfig("nats", h, b["nats"]["plain"]),
        "rabbitmq": BrokerConfig("rabbitmq", h, b["rabbitmq"]["plain"],
                                 username=b["rabbitmq"]["username"],
                                 password=b["rabbitmq"]["password"],
                                 options={"vhost": b["rabbitmq"]["vhost"]}),
    }


def bare_kafka(c) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"{c.host}:{c.port}", "log_level": 0})
    admin.list_topics(timeout=5)


def bare_pulsar(c) -> None:
    import logging

    import pulsar

    client = pulsar.Client(c.url, operation_timeout_seconds=5, logger=logging.getLogger("bench"))
    try:
        client.get_topic_partitions("persistent://public/default/bench")
    finally:
        client.close()


def bare_mqtt(c) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare")
    got = {}
    client.on_connect = lambda *a: got.setdefault("rc", a[3])
    client.connect(c.host, c.port, keepalive=30)
    deadline = time.monotonic() + 5
    while "rc" not in got and time.monotonic() < deadline:
        client.loop(timeout=0.01)
    client.disconnect()
    client.socket() and client.socket().close()


def bare_nats(c) -> None:
    import nats

    async def go() -> None:
        async def quiet(_e):
            return None
        nc = await nats.connect(f"nats://{c.host}:{c.port}", connect_timeout=2,
                                allow_reconnect=False, max_reconnect_attempts=1, error_cb=quiet)
        await nc.rtt()
        await nc.close()

    asyncio.run(go())


def bare_rabbitmq(c) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(
        c.host, c.port, c.options["vhost"], pika.PlainCredentials(c.username, c.password)))
    conn.channel()
    conn.close()


BARE = {"kafka": bare_kafka, "pulsar": bare_pulsar, "mqtt": bare_mqtt, "nats": bare_nats,
        "rabbitmq": bare_rabbitmq}


def median_ms(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def latencies(cfg: dict, repeat: int) -> dict[str, float]:
    from console.brokers import get_checker

    print("1. check latency vs bare client (median of %d)" % repeat)
    slowest = {}
    for protocol, c in cfg.items():
        checker = get_checker(protocol)

        def ours():
            result = checker.check(c, 5)
            assert result.up, result.as_dict()

        mine = median_ms(ours, repeat)
        bare = median_ms(lambda: BARE[protocol](c), repeat)
        slowest[protocol] = mine
        print(f"   {protocol:<9} check {mine:7.2f} ms   bare {bare:7.2f} ms   ratio {mine / bare:5.2f}"
              f"  (target ≤ 1.5)")
    return slowest


def fan_out(cfg: dict, repeat: int) -> None:
    from console.brokers import get_checker
    from concurrent.futures import ThreadPoolExecutor

    singles = {p: median_ms(lambda p=p: get_checker(p).check(cfg[p], 5), repeat) for p in cfg}
    with ThreadPoolExecutor(max_workers=len(cfg)) as pool:
        def all_five():
            results = list(pool.map(lambda p: get_checker(p).check(cfg[p], 5), cfg))
            assert all(r.up for r in results)
        wall = median_ms(all_five, repeat)
    slowest = max(singles.values())
    print(f"2. fan-out: all five concurrently {wall:.2f} ms, slowest single "
          f"{slowest:.2f} ms ({max(singles, key=singles.get)}): ratio {wall / slowest:.2f} "
          f"(target ≤ 1.3)")


def blackhole(data: dict) -> None:
    from console.brokers import get_checker
    from console.brokers.base import BrokerConfig

    print("3. overrun on a silent port (accepts, never answers) and a SYN-dropping port, timeout 2 s")
    for name in ("silent", "syn_drop"):
        port = data["faults"][name]
        for protocol in ("kafka", "pulsar", "mqtt", "nats", "rabbitmq"):
            config = BrokerConfig(protocol, "127.0.0.1", port, servers=(("127.0.0.1", port),)
                                  if protocol == "kafka" else (),
                                  url=f"pulsar://127.0.0.1:{port}" if protocol == "pulsar" else None,
                                  options={"security_protocol": "PLAINTEXT"})
            started = time.perf_counter()
            result = get_checker(protocol).check(config, 2.0)
            elapsed = time.perf_counter() - started
            print(f"   {name:<8} {protocol:<9} {elapsed:5.2f} s  overrun {(elapsed / 2 - 1) * 100:+5.1f} %"
                  f"  cause {result.cause}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hammer(port: int, path: str, seconds: float, threads: int = 4) -> float:
    count = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while time.monotonic() < stop:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status in (200, 503):
                count[i] += 1
        conn.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(count) / seconds


def readyz_throughput(data: dict) -> None:
    port = free_port()
    instance = tempfile.mkdtemp(prefix="bench-readyz-")
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": instance, "CONSOLE_BIND": f"127.0.0.1:{port}",
           "CONSOLE_WORKERS": "2", "CONSOLE_CHECK_INTERVAL": "5",
           "SP_MQTT_ENABLED": "true", "SP_MQTT_HOST": "127.0.0.1",
           "SP_MQTT_PORT": str(data["brokers"]["mqtt"]["plain"]),
           "SP_NATS_ENABLED": "true", "SP_NATS_HOST": "127.0.0.1",
           "SP_NATS_PORT": str(data["brokers"]["nats"]["plain"])}
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                               "--access-logfile", "/dev/null", "bench.trivial_app:app"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(3)
        hammer(port, "/bench/trivial", 1)
        rounds = []
        for _ in range(5):
            trivial = hammer(port, "/bench/trivial", 2)
            ready = hammer(port, "/readyz", 2)
            rounds.append((ready, trivial))
        ready = statistics.median(r for r, _ in rounds)
        trivial = statistics.median(t for _, t in rounds)
        ratio = statistics.median(r / t for r, t in rounds)
        print(f"4. /readyz {ready:7.0f} req/s, trivial route {trivial:7.0f} req/s under the same "
              f"gunicorn (2 workers × 4 threads), median of 5 alternating rounds: ratio "
              f"{ratio:.2f} (target ≥ 0.8)")
    finally:
        server.terminate()
        server.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    data = lab()
    cfg = configs(data)
    latencies(cfg, args.repeat)
    fan_out(cfg, args.repeat)
    blackhole(data)
    readyz_throughput(data)


if __name__ == "__main__":
    main()
