"""Connection-check benchmark against the local broker lab (`make brokers` first).

    .venv/bin/python -m bench checks [--scale 0.2]      (or: make bench)

Figures, each side of every ratio alternating with the other in rounds:
1. per protocol, the console's check against the bare client library doing the same minimal operation
   (target: ratio of the medians ≤ 1.5; for Kafka also the check's p90 ≤ 1.5 × the bare client's p50);
2. checking all five concurrently against the slowest single check (target ≤ 1.3);
3. the overrun of a check against a silent and a SYN-dropping port over its timeout (target ≤ 10 %);
4. /readyz requests per second against a trivial Flask route under the same server (target ≥ 0.8).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench.stats import Run, benchmark, hammer, main  # noqa: E402 - after the path set-up, as a script too


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
        "kafka tls": BrokerConfig("kafka", h, b["kafka"]["tls"], servers=((h, b["kafka"]["tls"]),),
                                  tls=True, tls_ca_file=data["certs"]["ca"],
                                  options={"security_protocol": "SSL", "client_id": "bench"}),
    }


def bare_kafka(c) -> None:
    from confluent_kafka.admin import AdminClient

    conf = {"bootstrap.servers": f"{c.host}:{c.port}", "log_level": 0}
    if c.tls:
        conf.update({"security.protocol": "SSL", "ssl.ca.location": c.tls_ca_file})
    admin = AdminClient(conf)
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
        "rabbitmq": bare_rabbitmq, "kafka tls": bare_kafka}


def latencies(run: Run, cfg: dict) -> dict[str, float]:
    """Check against bare client per protocol; the median of each check, by protocol."""
    from console.brokers import get_driver

    run.say("1. check latency vs bare client")
    medians = {}
    for protocol, c in cfg.items():
        driver = get_driver(protocol.split()[0])

        def ours(driver=driver, c=c):
            result = driver.check(c, 5)
            assert result.up, result.as_dict()

        comparison = run.compare(protocol, {"console check": ours,
                                            "bare client": lambda c=c, p=protocol: BARE[p](c)},
                                 rounds=10, per_round=10, target=1.5)
        check = comparison.distribution("console check").summary()
        bare = comparison.distribution("bare client").summary()
        medians[protocol] = check["p50"]
        if protocol.startswith("kafka"):
            ratio = check["p90"] / bare["p50"]
            run.value(f"{protocol}: check p90 / bare client p50", ratio, "", "≤ 1.5", ratio <= 1.5)
            if bare["bimodal"]:
                fast = check["p90"] / bare["bimodal"]["low"]
                run.value(f"{protocol}: check p90 / bare client's fast mode", fast, "", "≤ 1.5", fast <= 1.5)
    return medians


def fan_out(run: Run, cfg: dict, medians: dict[str, float]) -> None:
    """All five concurrently against the slowest single check."""
    from concurrent.futures import ThreadPoolExecutor

    from console.brokers import get_driver

    five = {p: c for p, c in cfg.items() if " " not in p}
    slowest = max(five, key=lambda p: medians[p])
    run.say(f"2. fan-out: all five checks concurrently vs the slowest single one ({slowest})")
    with ThreadPoolExecutor(max_workers=len(five)) as pool:
        def all_five():
            results = list(pool.map(lambda p: get_driver(p).check(five[p], 5), five))
            assert all(r.up for r in results), [r.as_dict() for r in results if not r.up]

        comparison = run.compare("fan-out", {"all five": all_five,
                                             f"{slowest} alone": lambda: get_driver(slowest).check(five[slowest], 5)},
                                 rounds=10, per_round=5, target=1.3)
        # What this machine allows: the CPU one run of all five costs this process (`process`: the checking
        # threads and the client libraries' own threads) and the part of it spent in the checking threads
        # themselves (`threads`: Python under the GIL, one at a time, plus the C code those threads run).
        # No schedule finishes before max(threads, process / cores), and the five lab brokers need the
        # same cores meanwhile.
        def timed_check(p: str) -> float:
            started = time.thread_time()
            get_driver(p).check(five[p], 5)
            return time.thread_time() - started

        process, threads = [], []
        for _ in range(20):
            started = time.process_time()
            threads.append(sum(pool.map(timed_check, five)) * 1000)
            process.append((time.process_time() - started) * 1000)
        process.sort()
        threads.sort()
        cores = os.cpu_count() or 1
        alone = comparison.distribution(f"{slowest} alone").summary()["p50"]
        cpu, held = process[len(process) // 2], threads[len(threads) // 2]
        run.value("fan-out: CPU of this process per run of all five (p50)", cpu, "ms")
        run.value("fan-out: of it in the five checking threads (p50)", held, "ms")
        floor = max(held, cpu / cores) / alone
        run.value(f"fan-out: the least ratio possible here (max(threads, process / {cores} cores) / {slowest} "
                  f"alone, the brokers' own CPU left out)", floor, "",
                  "≤ 1.3 reachable only when this is well below it", floor < 1.0)


def blackhole(run: Run, data: dict) -> None:
    """Overrun of one check per protocol against a silent and a SYN-dropping port, timeout 2 s."""
    from console.brokers import get_driver
    from console.brokers.base import BrokerConfig

    run.say("3. overrun on a silent port (accepts, never answers) and a SYN-dropping port, timeout 2 s")
    for name in ("silent", "syn_drop"):
        port = data["faults"][name]
        for protocol in ("kafka", "pulsar", "mqtt", "nats", "rabbitmq"):
            config = BrokerConfig(protocol, "127.0.0.1", port, servers=(("127.0.0.1", port),)
                                  if protocol == "kafka" else (),
                                  url=f"pulsar://127.0.0.1:{port}" if protocol == "pulsar" else None,
                                  options={"security_protocol": "PLAINTEXT"})
            started = time.perf_counter()
            result = get_driver(protocol).check(config, 2.0)
            overrun = (time.perf_counter() - started) / 2 - 1
            run.value(f"{name:<8} {protocol:<9} overrun (cause {result.cause})", overrun * 100, "%",
                      "≤ 10 %", overrun <= 0.10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readyz_throughput(run: Run, data: dict) -> None:
    """/readyz against a trivial route of the same app under the same gunicorn, 2 s per side and round."""
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
                               "--access-logfile", "/dev/null", "bench._trivial_app:app"],
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
        run.say("4. /readyz vs a trivial route under the same gunicorn (2 workers × 4 threads), "
                "4 client threads, 2 s per sample")
        run.compare("/readyz throughput", {
            "/readyz": lambda: hammer(port, "/readyz", 2, ok=(200, 503)).per_second,
            "trivial route": lambda: hammer(port, "/bench/trivial", 2).per_second},
                    rounds=6, per_round=1, sample=lambda fn: fn(), unit="req/s", target=0.8,
                    higher_is_better=True)
    finally:
        server.terminate()
        server.wait(20)


@benchmark("checks", "Connection checks against the broker lab: console vs bare client library")
def checks(run: Run) -> None:
    """The four figures of the module docstring."""
    data = lab()
    cfg = configs(data)
    medians = latencies(run, cfg)
    fan_out(run, cfg, medians)
    blackhole(run, data)
    readyz_throughput(run, data)


if __name__ == "__main__":
    main(only="checks")
