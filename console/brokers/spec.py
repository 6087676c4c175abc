"""What the rest of the console knows about a protocol, declared by its driver as plain data.

Every protocol has a `<protocol>_spec.py` beside its driver with one `ProtocolSpec`: its label and ports,
its settings fields (with the parsers of its own formats), the field that lists its nodes, how its
address and TLS follow from its effective settings, its alias variables, its cross-field rules and its
pitfalls. A spec imports no client library, so the settings model, the CLI listings and the page read it
without loading one; the driver (`<protocol>.py`) names its spec and takes its label and ports from it.

The settings model reads effective settings through `Settings`, a read-only view that its
`ProtocolSettings` satisfies; the brokers layer never imports the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol

from .values import split_host_port

INSTALL_REASONS = {
    "enabled": "Adapters are created on the protocols that are enabled; disabling one strands them.",
    "address": "Adapters get the broker address copied into them when they are created.",
    "security": "Adapters are created with the TLS and login settings of that moment.",
    "identity": "Consumers keep the identity they were created with; a new one starts over.",
}
RUNTIME_REASONS = {
    "tuning": "Read at every connection; takes effect on the next connect.",
}


def node_name(host: str, port: int) -> str:
    """host:port, IPv6 addresses bracketed: how a node is named everywhere."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_node(name: str) -> tuple[str, int]:
    """(host, port) of a node name made by `node_name`."""
    host, _, port = name.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Field:
    """One setting of one protocol."""

    name: str
    label: str
    kind: str                       # bool str host port int choice hostlist serverlist url secret file
    default: Any = None
    group: str = "connection"       # connection | security | options
    install_time: bool = True
    reason: str = ""
    help: str = ""
    choices: tuple[Any, ...] = ()    # strings, or integers for an integer setting (MQTT qos)
    minimum: int | None = None
    maximum: int | None = None
    env_suffix: str | None = None   # SP_<P>_<suffix>; defaults to the upper-cased name
    env_upper: bool = False         # the environment may spell the value in lower case
    parse: Callable[[Any], Any] | None = field(default=None, compare=False)  # a protocol's own format

    @property
    def secret(self) -> bool:
        return self.kind == "secret" or self.name == "tls_key"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def integer(self) -> bool:
        """Whether the value is an integer (a JSON integer in every answer, export and document)."""
        return self.kind in ("int", "port") or (self.kind == "choice"
                                                and all(isinstance(c, int) for c in self.choices))

    def env_var(self, protocol: str) -> str:
        return f"SP_{protocol.upper()}_{self.env_suffix or self.name.upper()}"

    @property
    def change_kind(self) -> str:
        return "installation-time" if self.install_time else "runtime"


def install(kind: str, group: str | None = None) -> dict[str, Any]:
    """Field arguments of an installation-time setting of `kind` (INSTALL_REASONS), in `group`."""
    return {"install_time": True, "reason": INSTALL_REASONS[kind], **({"group": group} if group else {})}


RUNTIME: dict[str, Any] = {"install_time": False, "reason": RUNTIME_REASONS["tuning"], "group": "options"}
SECURITY: dict[str, Any] = install("security", "security")


def common(default_port: int, *, address: bool = True) -> list[Field]:
    """The fields every protocol opens with: enabled, and host and port."""
    fields = [
        Field("enabled", "Enabled", "bool", False, **install("enabled"),
              help="Offer this protocol to adapters and check its broker."),
    ]
    if address:
        fields += [
            Field("host", "Host", "host", "localhost", **install("address"),
                  help="Broker host name or IP address."),
            Field("port", "Port", "port", default_port, minimum=1, maximum=65535, **install("address")),
        ]
    return fields


def tls() -> list[Field]:
    """The TLS fields: the switch, the truststore, the client certificate and its key, host-name checking."""
    return [
        Field("tls", "TLS", "bool", False, **SECURITY, help="Encrypt the connection with TLS."),
        Field("tls_ca", "CA truststore", "file", None, **SECURITY, env_suffix="TLS_CA_FILE",
              help="PEM, PKCS#12 or JKS with the CA(s) that signed the broker certificate. "
                   "Without one the system CA store is used."),
        Field("tls_cert", "Client certificate", "file", None, **SECURITY, env_suffix="TLS_CERT_FILE",
              help="For brokers that require client certificates (mutual TLS): PEM with its key, "
                   "PKCS#12 or JKS."),
        Field("tls_key", "Client key", "file", None, **SECURITY, env_suffix="TLS_KEY_FILE",
              help="The private key of the client certificate; uploaded with it."),
        Field("tls_verify_hostname", "Verify host name", "bool", True, **SECURITY,
              help="Check that the broker certificate names the host connected to."),
    ]


def login(default_user: str | None = None, default_password: str | None = None) -> list[Field]:
    """Username and password."""
    return [
        Field("username", "Username", "str", default_user, **SECURITY),
        Field("password", "Password", "secret", default_password, **SECURITY),
    ]


def connect_timeout(default: int = 10) -> Field:
    """The client's connect timeout, in seconds."""
    return Field("connect_timeout", "Connect timeout (s)", "int", default, minimum=1, maximum=300,
                 **RUNTIME, help="How long a client waits for the broker to answer.")


class Value(Protocol):
    """One effective value, as a spec reads it."""

    @property
    def field(self) -> Field: ...

    @property
    def value(self) -> Any: ...

    @property
    def source(self) -> str: ...

    @property
    def is_set(self) -> bool: ...


class Settings(Protocol):
    """The effective settings of one protocol, as a spec reads them (the model's ProtocolSettings)."""

    @property
    def protocol(self) -> str: ...

    @property
    def fields(self) -> Mapping[str, Value]: ...

    def __getitem__(self, name: str) -> Any: ...

    def get(self, name: str, default: Any = None) -> Any: ...


@dataclass(frozen=True)
class Finding:
    """One cross-field rule's verdict: an error blocks saving, a warning is shown."""

    fields: tuple[str, ...]
    target: str
    message: str
    severity: str = "error"


@dataclass(frozen=True)
class Pitfall:
    """One pitfall in one protocol's settings (console/diagnostics/lint.py): how bad, why, how to fix."""

    protocol: str
    field: str
    severity: str
    title: str
    why: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def own(s: Settings, *names: str) -> bool:
    """Whether the operator set any of these fields (saved or environment), not the default."""
    return any(name in s.fields and s.fields[name].source != "default" for name in names)


def host_port_list(value: str) -> tuple[tuple[str, int], ...]:
    """(host, port) of every node of a host:port list."""
    return tuple(split_host_port(item) for item in value.split(","))


class ProtocolSpec:
    """One protocol, as its driver declares it. Subclasses set the class attributes and override what
    their protocol does differently; `<protocol>_spec.py` holds the one instance, `SPEC`."""

    name: ClassVar[str]
    label: ClassVar[str]
    default_port: ClassVar[int]
    tls_port: ClassVar[int | None] = None     # the usual TLS port, when the protocol has its own
    driver: ClassVar[str]                     # "module:Class" of the driver, imported on first use
    fields: ClassVar[tuple[Field, ...]]
    node_list: ClassVar[str | None] = None    # the field listing the nodes; when set it wins over host and port
    server_list: ClassVar[bool] = False       # the driver takes its addresses as `servers`, even just one
    client_name: ClassVar[str | None] = None  # the field a client names itself with at the broker
    unique_client_name: ClassVar[bool] = False  # the broker disconnects a client when another takes its name
    # accepted environment variables of other tools' conventions: name -> its parser, giving the fields it
    # sets and a note for every part it does not apply
    aliases: ClassVar[Mapping[str, Callable[[str], tuple[dict[str, Any], list[str]]]]] = {}

    def nodes(self, value: str) -> tuple[tuple[str, int], ...]:
        """(host, port) of every node in the node-list field's (normalised) value."""
        return host_port_list(value)

    def addresses(self, s: Settings) -> tuple[tuple[str, int], ...]:
        """Every (host, port) the settings connect to."""
        if self.node_list and s.get(self.node_list):
            return self.nodes(s[self.node_list])
        return ((s["host"], int(s["port"])),)

    def url(self, s: Settings) -> str | None:
        """The service URL the driver connects with, for a protocol that has one."""
        return None

    def uses_tls(self, s: Settings) -> bool:
        """Whether connections are encrypted."""
        return bool(s.get("tls"))

    def asks_tls(self, s: Settings) -> bool:
        """Whether the fields ask for TLS, for the rules about TLS material (the switch, or what the
        protocol's own fields imply)."""
        return bool(s.get("tls"))

    def address_label(self, s: Settings) -> str:
        """The address as one string (the service URL, else a host:port list)."""
        return self.url(s) or ",".join(node_name(h, p) for h, p in self.addresses(s))

    def derived(self, s: Settings) -> dict[str, Any]:
        """Values the protocol derives from its fields, for its identity and its driver."""
        return {}

    def rules(self, s: Settings) -> list[Finding]:
        """The protocol's own cross-field findings (the TLS rules of every protocol come first)."""
        return []

    def pitfalls(self, s: Settings) -> list[Pitfall]:
        """The protocol's own pitfalls that no connection test shows (the lint adds the security ones)."""
        return []


def login_pair(s: Settings, password_required: bool) -> list[Finding]:
    """A password needs a username; with `password_required`, a username needs its password."""
    out: list[Finding] = []
    user = s.get("username")
    password_set = s.fields["password"].is_set
    if password_set and not user:
        out.append(Finding(("username", "password"), "username", "A password needs a username."))
    if user and password_required and not password_set:
        out.append(Finding(("username", "password"), "password",
                           f"Give the password of {user}."))
    return out
