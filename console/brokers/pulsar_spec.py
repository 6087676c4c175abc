"""Pulsar as the settings model sees it: fields, the service URL (how it is parsed, and built from host,
port and TLS) and its rules (the driver is pulsar.py)."""
from __future__ import annotations

from typing import Any

from .spec import (
    RUNTIME,
    SECURITY,
    Field,
    Finding,
    Pitfall,
    ProtocolSpec,
    Settings,
    common,
    connect_timeout,
    install,
    tls,
)
from .values import Invalid, format_host_port, split_host_port

IDENTITY = install("identity", "options")


def parse_pulsar_url(raw: Any) -> str | None:
    """pulsar://host:port[,host:port] or pulsar+ssl://…; empty means unset."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("pulsar", "pulsar+ssl"):
        raise Invalid(f"'{text}' is not a Pulsar URL: use pulsar://host:6650 or "
                      "pulsar+ssl://host:6651.")
    rest = rest.rstrip("/")
    if not rest or "/" in rest or "@" in rest:
        raise Invalid(f"'{text}' is not a Pulsar URL: use pulsar://host:6650 or "
                      "pulsar+ssl://host:6651.")
    default = 6651 if scheme == "pulsar+ssl" else 6650
    hosts = [format_host_port(*split_host_port(x, default)) for x in rest.split(",") if x.strip()]
    return f"{scheme}://{','.join(hosts)}"


class PulsarSpec(ProtocolSpec):
    name = "pulsar"
    label = "Pulsar"
    default_port = 6650
    tls_port = 6651
    driver = "console.brokers.pulsar:PulsarDriver"
    node_list = "url"
    client_name = "subscription_name"
    fields = (
        *common(6650),
        Field("url", "Service URL", "url", None, **install("address"), parse=parse_pulsar_url,
              help="pulsar://host:port or pulsar+ssl://host:port, several hosts comma-separated "
                   "(pulsar://h1:6650,h2:6650); wins over host and port."),
        *tls(),
        Field("token", "Token", "secret", None, **SECURITY, help="JWT for token authentication."),
        Field("oauth2_issuer_url", "OAuth2 issuer URL", "str", "", **SECURITY),
        Field("oauth2_client_id", "OAuth2 client id", "str", "", **SECURITY),
        Field("oauth2_client_secret", "OAuth2 client secret", "secret", None, **SECURITY),
        Field("oauth2_audience", "OAuth2 audience", "str", "", **SECURITY),
        Field("topic", "Topic", "str", "persistent://public/default/messaging-console", **IDENTITY),
        Field("subscription_name", "Subscription name", "str", "messaging-console", **IDENTITY),
        Field("subscription_type", "Subscription type", "choice", "Shared",
              choices=("Exclusive", "Shared", "Failover", "Key_Shared"), **IDENTITY),
        Field("consumers", "Consumers per subscription", "int", 1, minimum=1, maximum=1000, **RUNTIME),
        Field("operation_timeout", "Operation timeout (s)", "int", 30, minimum=1, maximum=600, **RUNTIME),
        connect_timeout(),
    )

    def nodes(self, value: str) -> tuple[tuple[str, int], ...]:
        default = 6651 if value.startswith("pulsar+ssl") else 6650
        return tuple(split_host_port(x, default) for x in value.split("://", 1)[1].split(","))

    def url(self, s: Settings) -> str:
        """The service URL: the configured one, else built from host, port and TLS."""
        if s.get("url"):
            return str(s["url"])
        scheme = "pulsar+ssl" if s.get("tls") else "pulsar"
        return f"{scheme}://{format_host_port(*self.addresses(s)[0])}"

    def uses_tls(self, s: Settings) -> bool:
        return self.url(s).startswith("pulsar+ssl://")

    def rules(self, s: Settings) -> list[Finding]:
        out: list[Finding] = []
        url = s.get("url") or ""
        if url.startswith("pulsar+ssl://") and not s.get("tls"):
            out.append(Finding(("url", "tls"), "tls", "The URL is pulsar+ssl://: turn TLS on."))
        if url.startswith("pulsar://") and s.get("tls"):
            out.append(Finding(("url", "tls"), "url",
                               "TLS is on but the URL is pulsar://: use pulsar+ssl://."))
        oauth = [n for n in ("oauth2_issuer_url", "oauth2_client_id") if s.get(n)]
        if oauth and len(oauth) < 2:
            missing = "oauth2_client_id" if "oauth2_issuer_url" in oauth else "oauth2_issuer_url"
            out.append(Finding(("oauth2_issuer_url", "oauth2_client_id"), missing,
                               "OAuth2 needs both the issuer URL and the client id."))
        if oauth and s.fields["token"].is_set:
            out.append(Finding(("token", "oauth2_issuer_url"), "token",
                               "Use either a token or OAuth2, not both."))
        issuer = s.get("oauth2_issuer_url") or ""
        if issuer and not issuer.startswith(("https://", "http://")):
            out.append(Finding(("oauth2_issuer_url",), "oauth2_issuer_url",
                               "The issuer URL must start with https://."))
        return out

    def pitfalls(self, s: Settings) -> list[Pitfall]:
        if s.get("subscription_type") == "Exclusive" and int(s.get("consumers") or 1) > 1:
            return [Pitfall(self.name, "subscription_type", "error",
                            "Exclusive subscription with several consumers",
                            f"Only one consumer may attach to an Exclusive subscription; the other "
                            f"{int(s.get('consumers')) - 1} are refused (ConsumerBusy).",
                            "Use Shared or Key_Shared to spread load, or Failover for a hot "
                            "standby.")]
        return []


SPEC = PulsarSpec()
