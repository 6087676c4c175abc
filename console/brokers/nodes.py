"""Several broker nodes: a cluster setting (Kafka bootstrap list, NATS servers, RabbitMQ addresses,
Pulsar multi-host URL) is checked node by node, side by side within one deadline, and every node is
reported.

`node_configs` splits a configuration into one single-node configuration per node; `check_nodes` runs a
check of each (a dead node costs at most the deadline, never more, and never delays a live node's
answer), adds a node for every broker the cluster advertises that is not configured (Kafka: the
`advertised` list of a check's identity), and makes one result of them: `up` with the first live
node's identity and latency, and a `node_unreachable` warning per failed node, while any configured node
works; else the first configured node's failure. The diagnosis engine uses the same split.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any, Callable, Iterable

from .base import BrokerConfig, CheckResult, Deadline
from .spec import node_name, parse_node

NODE_UNREACHABLE = "node_unreachable"
MAX_ADVERTISED = 8    # advertised brokers checked side by side
GRACE = 0.05          # seconds past the deadline a node's check may take before it counts as unfinished
NODE_SHARE = 1 / 1.1  # of the time left, for each node of several: a check may outlive its own by 10 %

CheckOne = Callable[[BrokerConfig, float], CheckResult]


def single(config: BrokerConfig, host: str, port: int) -> BrokerConfig:
    """`config` pointed at the one node host:port (a Pulsar URL keeps its scheme)."""
    url = f"{config.url.split('://', 1)[0]}://{node_name(host, port)}" if config.url else None
    return replace(config, host=host, port=port, url=url,
                   servers=((host, port),) if config.servers else ())


def addresses_of(config: BrokerConfig) -> tuple[tuple[str, int], ...]:
    """Every configured node: the server list, else the hosts of a multi-host URL, else host:port."""
    if config.servers or not config.url or "," not in config.url:
        return config.addresses
    out = []
    for item in config.url.split("://", 1)[1].split(","):
        host, _, port = item.strip().rstrip("/").rpartition(":")
        out.append((host.strip("[]"), int(port)) if host and port.isdigit() else (item.strip("[]"), config.port))
    return tuple(out)


def node_configs(config: BrokerConfig) -> list[BrokerConfig]:
    """One configuration per configured node (duplicates dropped), or [config] for a single node."""
    every = addresses_of(config)
    addresses = list(dict.fromkeys(every))
    if len(every) == 1:
        return [config]
    return [single(config, host, port) for host, port in addresses]


def node_entry(name: str, result: CheckResult, *, advertised: bool = False) -> dict[str, Any]:
    """What a result reports about one node."""
    entry: dict[str, Any] = {"node": name, "status": result.status,
                             "latency_ms": None if result.latency_ms is None else round(result.latency_ms, 2),
                             "cause": result.cause, "message": result.message}
    if advertised:
        entry["advertised"] = True
    return entry


def warnings_for(nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `node_unreachable` warning per node that is down."""
    return [{"code": NODE_UNREACHABLE, "node": n["node"], "cause": n["cause"],
             "detail": n["message"] or n["cause"]} for n in nodes if n["status"] != "up"]


def advertised_names(identity: dict[str, Any]) -> list[str]:
    """The node names a check's identity says the cluster advertises (Kafka's brokers)."""
    value = identity.get("advertised") or []
    return [str(name) for name in value] if isinstance(value, (list, tuple)) else []


def check_nodes(config: BrokerConfig, timeout: float, check_one: CheckOne) -> CheckResult:
    """Check every node of `config` with `check_one(node_config, seconds)` within `timeout` seconds, and
    every advertised broker that is not configured; one result with `nodes` and `warnings`."""
    deadline = Deadline(timeout)
    configs = node_configs(config)
    names = [node_name(*c.addresses[0]) for c in configs]
    results: dict[str, CheckResult] = {}
    advertised: list[str] = []
    if len(configs) == 1:
        results[names[0]] = _guarded(check_one, configs[0], timeout)
        extra = [n for n in advertised_names(results[names[0]].identity) if n not in names]
        if extra and not deadline.expired:
            advertised = extra
            results.update(_run({n: single(config, *parse_node(n)) for n in extra}, None, deadline, check_one)[0])
    else:
        results, advertised = _run(dict(zip(names, configs)), config, deadline, check_one)
    return combine(config.protocol, names, advertised, results)


def combine(protocol: str, names: list[str], advertised: list[str],
            results: dict[str, CheckResult]) -> CheckResult:
    """One result from the results per node: the first live configured node's, with every node and a
    warning per failed one; else the first configured node's failure."""
    nodes = [node_entry(n, results[n]) for n in names] + \
        [node_entry(n, results[n], advertised=True) for n in advertised]
    live = next((results[n] for n in names if results[n].up), None)
    main = live or results[names[0]]
    chosen = CheckResult(protocol, main.status, main.latency_ms, main.cause, main.message, dict(main.identity),
                         main.checked_at, nodes=nodes)
    if live is not None and len(nodes) > 1:
        chosen.warnings = warnings_for(nodes)
    return chosen


def _guarded(check_one: CheckOne, config: BrokerConfig, timeout: float) -> CheckResult:
    try:
        return check_one(config, timeout)
    except Exception as exc:  # noqa: BLE001 - a check never raises
        return CheckResult(config.protocol, "down", 0.0, "unknown", f"{type(exc).__name__}: {exc}")


def _unfinished(config: BrokerConfig, timeout: float) -> CheckResult:
    return CheckResult(config.protocol, "down", timeout * 1000.0, "unknown",
                       "the check of this node did not finish within its timeout")


def _run(configs: dict[str, BrokerConfig], base: BrokerConfig | None, deadline: Deadline,
         check_one: CheckOne) -> tuple[dict[str, CheckResult], list[str]]:
    """Check every node side by side; with `base`, also each advertised broker a live node names, as
    soon as it answers. Nodes still running at the deadline (plus GRACE) are reported unfinished."""
    results: dict[str, CheckResult] = {}
    advertised: list[str] = []
    pool = ThreadPoolExecutor(max_workers=len(configs) + MAX_ADVERTISED, thread_name_prefix="broker-node")
    running: dict[Future[CheckResult], str] = {}
    all_configs = dict(configs)
    finished = False
    try:
        for name, node in configs.items():
            running[pool.submit(_guarded, check_one, node, deadline.remaining() * NODE_SHARE)] = name
        while running:
            done, _ = wait(list(running), timeout=deadline.remaining() + GRACE, return_when=FIRST_COMPLETED)
            if not done:
                break
            for future in done:
                name = running.pop(future)
                results[name] = future.result()
                if base is None or not results[name].up:
                    continue
                for extra in advertised_names(results[name].identity):
                    if extra in all_configs or deadline.expired:
                        continue
                    advertised.append(extra)
                    all_configs[extra] = single(base, *parse_node(extra))
                    running[pool.submit(_guarded, check_one, all_configs[extra],
                                        deadline.remaining() * NODE_SHARE)] = extra
        finished = not running
        for name in running.values():
            results[name] = _unfinished(all_configs[name], deadline.timeout)
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
    return results, advertised
