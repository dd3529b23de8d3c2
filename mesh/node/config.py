"""Configuration of a node process (``python -m mesh.node``): one table of options, four sources.

Precedence, lowest to highest — a value from a higher source replaces the lower one whole (a
list given as a flag replaces the file's list, it does not extend it):

1. built-in defaults (:class:`NodeConfig`; gossip: :class:`mesh.swim.config.SwimConfig`);
2. the TOML file named by ``--config FILE`` or, when that flag is absent, ``$MESH_CONFIG``;
3. environment variables ``MESH_<KEY>``;
4. command-line flags.

Each option has one entry in :data:`OPTIONS`, and its three spellings are derived from that
entry's key, so they cannot drift apart (dashes in flags, ``MESH_`` and capitals in the
environment, the key itself in its TOML table)::

    key             flag                             environment              TOML
    metrics_port    --metrics-port 9464              MESH_METRICS_PORT=9464   metrics_port = 9464
    join (a list)   --join A --join B, --join A,B    MESH_JOIN=A,B            join = ["A", "B"]
    raft_voters     --raft-voters n1,n2              MESH_RAFT_VOTERS=n1,n2   [raft] voters = ["n1", "n2"]
    raft_member     --raft-member, --no-raft-member  MESH_RAFT_MEMBER=true    [raft] member = true
    gossip.<field>  --gossip-<field> 500             MESH_GOSSIP_<FIELD>=500  [gossip] <field> = 500

The node options: ``id`` (required), ``bind``, ``join``, ``agent``, ``singleton``, ``data_dir``,
``log_level`` (debug | info | warning | error), ``log_format`` (text | kv | json, see
:mod:`mesh.observe.logs`), ``default_timeout``, ``join_timeout``, ``drain_timeout`` (seconds),
``metrics_port`` / ``metrics_host`` (Prometheus), ``http_port`` / ``http_host`` (the live web
page), ``raft_voters``, ``raft_member``; and one ``gossip.<field>`` per field of SwimConfig.
``python -m mesh.node --help`` lists them all with their defaults.

In the file, node options sit at top level or in a ``[node]`` table (not both for one key),
gossip fields in ``[gossip]``, the Raft ones in ``[raft]``; ``data-dir`` may be spelt with a
dash. An unknown key or table in the file is an error. In the environment and in flags, list
items are separated by commas (or spaces), and list flags may also be repeated; booleans in
the environment are ``1/0``, ``true/false``, ``yes/no`` or ``on/off``; an empty variable counts
as unset. Unknown ``MESH_*`` variables are not errors (other parts of mesh read ``MESH_PURE``
and more), but a near miss of a setting's name (``MESH_METRIC_PORT``) is warned about.

Invalid values fail at start with :class:`~mesh.errors.ConfigError`, naming the key as its
source spells it and the problem: ``MESH_METRICS_PORT: must be an integer 0..65535, got
'abc'``, ``node.toml: [node] metrics_port: must be an integer 0..65535, got "x"``,
``--default-timeout: must be a positive number of seconds, got '-1'``.

``python -m mesh.node --print-config`` prints the effective configuration as TOML, each value
followed by a comment that says where it came from, and exits (:func:`render_toml`).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from mesh.errors import ConfigError
from mesh.node.gossip import SEED_PREFIX   # seed addresses, never node ids, start with it
from mesh.observe.logs import LOG_FORMATS
from mesh.swim.config import SwimConfig

__all__ = ["ConfigError", "NodeConfig", "Option", "OPTIONS", "ResolvedConfig", "Source", "LOG_LEVELS",
           "LOG_FORMATS", "ENV_CONFIG", "load_config", "resolve_config", "render_toml"]

LOG_LEVELS = ("debug", "info", "warning", "error")
ENV_PREFIX = "MESH_"
ENV_CONFIG = "MESH_CONFIG"
_LIST_SPLIT = re.compile(r"[\s,]+")
_ENDPOINT = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass
class NodeConfig:
    """The effective settings of one node process (what :func:`load_config` returns)."""

    id: str = ""
    bind: str = "tcp://127.0.0.1:*"
    join: list[str] = field(default_factory=list)
    agent: list[str] = field(default_factory=list)
    singleton: list[str] = field(default_factory=list)
    data_dir: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    default_timeout: float = 30.0
    join_timeout: float = 10.0
    drain_timeout: float = 5.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    http_port: int | None = None
    http_host: str = "127.0.0.1"
    raft_voters: list[str] = field(default_factory=list)
    raft_member: bool = False
    keys: str | None = None
    trust: str | None = None
    acl: str | None = None
    audit_log: str | None = None
    insecure: bool = False
    gossip: dict[str, int] = field(default_factory=dict)
    """SwimConfig fields set by some source (the others keep SwimConfig's defaults)."""


@dataclass(frozen=True, slots=True)
class Option:
    """One setting. ``key`` names it everywhere: the NodeConfig field (``gossip.x`` lands in
    ``NodeConfig.gossip["x"]``), the flag, the environment variable and the TOML key."""

    key: str
    kind: str                          # str | int | float | bool | list | choice
    help: str
    table: str = "node"                # the TOML table; "node" keys may also sit at top level
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    lo: int | None = None              # int bounds, inclusive
    hi: int | None = None
    repeat: bool = False               # list flag given once per item (besides comma lists)
    check: Callable[[str], str | None] | None = None   # per (list item) value: problem or None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace(".", "-").replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def toml_key(self) -> str:
        if "." in self.key:                       # gossip.probe_interval_ms
            return self.key.partition(".")[2]
        prefix = self.table + "_"                 # raft_voters is `voters` in [raft]
        return self.key[len(prefix):] if self.table != "node" and self.key.startswith(prefix) else self.key

    @property
    def default(self) -> Any:
        if self.key.startswith("gossip."):
            return getattr(SwimConfig(), self.toml_key)
        return getattr(NodeConfig(), self.key)


def _node_id_problem(value: str) -> str | None:
    raw = value.encode()
    if not raw or len(raw) > 255 or raw[0] == 0 or value.startswith(SEED_PREFIX):
        return f"must be 1..255 bytes of UTF-8, not starting with NUL or {SEED_PREFIX!r}, got {value!r}"
    return None


def _endpoint_problem(value: str) -> str | None:
    if not _ENDPOINT.fullmatch(value):
        return f"must be a ZeroMQ endpoint such as tcp://127.0.0.1:7001, got {value!r}"
    return None


def _seed_problem(value: str) -> str | None:
    """A seed is an endpoint, optionally ``ID@`` it (with security on, the id picks its key)."""
    from mesh.security.links import split_seed

    if not _ENDPOINT.fullmatch(split_seed(value)[1]):
        return f"must be a ZeroMQ endpoint such as tcp://127.0.0.1:7001 or n1@tcp://127.0.0.1:7001, got {value!r}"
    return None


def _agent_problem(value: str) -> str | None:
    module, _, cls = value.partition("=")[0].partition(":")
    if not module or not cls:
        return f"must be MODULE:CLASS[=NAME], got {value!r}"
    return None


def _not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _gossip_options() -> list[Option]:
    docs = _field_docs(SwimConfig)
    return [Option(f"gossip.{f.name}", "int", docs.get(f.name) or f"SWIM {f.name.replace('_', ' ')}",
                   table="gossip", lo=0, metavar="N")
            for f in fields(SwimConfig)]


def _field_docs(cls: type) -> dict[str, str]:
    """First sentence of the docstring under each field of a dataclass (``--help`` text taken
    from where the field is defined, so it cannot drift from it)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError, SyntaxError):   # no source (frozen app): generic help
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            text = " ".join(after.value.value.replace("``", "").split())
            docs[node.target.id] = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
    return docs


OPTIONS: tuple[Option, ...] = (
    Option("id", "str", "node id, unique in the mesh (1..255 bytes); required", check=_node_id_problem),
    Option("bind", "str", "ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:7001 (port * = any free port)",
           check=_endpoint_problem),
    Option("join", "list", "address of a node to join through; ID@ADDRESS names the node, whose trusted key "
           "the link then uses", metavar="ADDRESS", repeat=True, check=_seed_problem),
    Option("agent", "list", "agent to host: a mesh.Agent subclass, optionally named; {id} in NAME is "
           "replaced by the node id", metavar="MODULE:CLASS[=NAME]", repeat=True, check=_agent_problem),
    Option("singleton", "list", "agent to run on exactly one of the nodes that name it, elected through the "
           "Raft store; it moves when its node stops or dies", metavar="MODULE:CLASS[=NAME]", repeat=True,
           check=_agent_problem),
    Option("data_dir", "str", "folder for this node's durable state", metavar="DIR",
           check=_not_empty),
    Option("log_level", "choice", "logging level", choices=LOG_LEVELS),
    Option("log_format", "choice", "log lines: text, kv (logfmt key=value) or json (one object per line)",
           choices=LOG_FORMATS),
    Option("default_timeout", "float", "timeout of calls made without one", metavar="SECONDS"),
    Option("join_timeout", "float", "how long to wait for the seeds at start", metavar="SECONDS"),
    Option("drain_timeout", "float", "on stop, how long in-flight calls may still finish", metavar="SECONDS"),
    Option("metrics_port", "int", "serve Prometheus metrics on http://HOST:PORT/metrics (0: any free port, "
           "shown in the ready line)", lo=0, hi=65535, metavar="PORT"),
    Option("metrics_host", "str", "address the metrics server listens on", metavar="HOST", check=_not_empty),
    Option("http_port", "int", "serve the node's live web page on http://HOST:PORT/ (0: any free port, "
           "shown in the ready line)", lo=0, hi=65535, metavar="PORT"),
    Option("http_host", "str", "address the web page listens on", metavar="HOST", check=_not_empty),
    Option("raft_voters", "list", "the ids of the Raft voters (the same list on every node); a node among "
           "them keeps the replicated store and needs a data dir", table="raft", metavar="ID,ID,...",
           check=_node_id_problem),
    Option("raft_member", "bool", "keep a Raft log here though this node is not a bootstrap voter, so it can "
           "be added as one later (needs a data dir)", table="raft"),
    Option("keys", "str", "this node's key file (python -m mesh.keys generate --id ID --out DIR): CURVE on "
           "every link, a signed membership record", table="security", metavar="FILE"),
    Option("trust", "str", "folder (of *.pub) or file of the public keys this node accepts", table="security",
           metavar="PATH"),
    Option("acl", "str", "TOML policy of who may call, publish, subscribe, read and write what (default deny "
           "once given)", table="security", metavar="FILE"),
    Option("audit_log", "str", "file for the ACL's denials, one JSON line each (default: the log only)",
           table="security", metavar="FILE"),
    Option("insecure", "bool", "run in plaintext without keys; only where every address is loopback",
           table="security"),
    *_gossip_options(),
)
_BY_KEY = {o.key: o for o in OPTIONS}
_BY_ENV = {o.env: o for o in OPTIONS}
TABLES = ("node", "gossip", "raft", "security")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: kind is ``default``, ``file``, ``env`` or ``flag``; ``name`` is
    the file's path, the variable or the flag."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.name if self.kind != "default" else "default"


@dataclass
class ResolvedConfig:
    """A validated configuration with the source of every option and any warnings."""

    config: NodeConfig
    sources: dict[str, Source]
    config_path: str | None = None
    """The TOML file read, if any, and what named it (``--config`` or ``MESH_CONFIG``)."""
    config_named_by: str | None = None
    warnings: list[str] = field(default_factory=list)

    def value(self, key: str) -> Any:
        if key.startswith("gossip."):
            name = key.partition(".")[2]
            return self.config.gossip.get(name, getattr(SwimConfig(), name))
        return getattr(self.config, key)


def load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Defaults < TOML file < ``MESH_*`` environment < flags, validated (see the module doc)."""
    return resolve_config(args, environ).config


def resolve_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ResolvedConfig:
    """Like :func:`load_config`, keeping where each value came from (``environ``: default
    ``os.environ``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {o.key: Source("default") for o in OPTIONS}

    path, named_by = getattr(args, "config", None), "--config"
    if not path and env.get(ENV_CONFIG, "").strip():
        path, named_by = env[ENV_CONFIG], ENV_CONFIG
    if path:
        for opt, value, where in _read_toml(path, named_by):
            values[opt.key] = _convert(opt, value, where, native=True)
            sources[opt.key] = Source("file", path)

    warnings = []
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
            continue
        opt = _BY_ENV.get(name)
        if opt is None:
            near = difflib.get_close_matches(name, [*_BY_ENV, ENV_CONFIG], n=1, cutoff=0.85)
            if near:
                warnings.append(f"environment variable {name} is not a mesh.node setting; did you mean {near[0]}?")
            continue
        if text.strip():   # empty: unset, as shells and compose files produce them
            values[opt.key] = _convert(opt, text, name, native=False)
            sources[opt.key] = Source("env", name)

    for opt in OPTIONS:
        given = getattr(args, _dest(opt), None)
        if given is None:
            continue
        if opt.kind == "list" and isinstance(given, list):   # a repeated flag: each may be a list too
            given = ",".join(given)
        values[opt.key] = _convert(opt, given, opt.flag, native=isinstance(given, bool))
        sources[opt.key] = Source("flag", opt.flag)

    gossip = {k.partition(".")[2]: values.pop(k) for k in list(values) if k.startswith("gossip.")}
    cfg = NodeConfig(**values, gossip=gossip)
    resolved = ResolvedConfig(cfg, sources, path or None, named_by if path else None, warnings)
    _check_whole(resolved)
    return resolved


def _dest(opt: Option) -> str:
    return opt.key.replace(".", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option of :data:`OPTIONS` (strings: every source goes through one check)."""
    groups = {"node": parser,
              "raft": parser.add_argument_group("Raft"),
              "security": parser.add_argument_group("security"),
              "gossip": parser.add_argument_group("gossip (SWIM) tuning, milliseconds or counts")}
    for opt in OPTIONS:
        shown = _show_default(opt.default)
        text = f"{opt.help} ({f'default {shown}; ' if shown else ''}env {opt.env})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": _dest(opt), "default": None, "help": text}
        if opt.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = opt.metavar or ("{" + ",".join(opt.choices) + "}" if opt.choices else None)
            if opt.repeat:
                kwargs["action"] = "append"
        if kwargs.get("metavar") is None:
            kwargs.pop("metavar", None)
        groups[opt.table].add_argument(opt.flag, **kwargs)


def _show_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(value) or "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_toml(path: str, named_by: str) -> list[tuple[Option, Any, str]]:
    """(option, raw value, where) for every setting in the file; unknown keys are errors."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{named_by}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{named_by}: {path} is not valid TOML: {exc}") from None
    found: list[tuple[Option, Any, str]] = []
    seen: dict[str, str] = {}

    def take(table: str, key: str, value: Any, where: str) -> None:
        name = key.replace("-", "_")
        known = {o.toml_key: o for o in OPTIONS if o.table == table}
        opt = known.get(name)
        if opt is None:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {near[0]}?" if near else f"known: {', '.join(sorted(known))}"
            raise ConfigError(f"{path}: unknown key {key!r}{' in ' + where.strip() if where else ''} ({hint})")
        here = where.strip() or "top level"
        if opt.key in seen:
            raise ConfigError(f"{path}: {opt.toml_key} is set twice ({seen[opt.key]} and {here})")
        seen[opt.key] = here
        found.append((opt, value, f"{path}: {where}{opt.toml_key}"))

    for key, value in raw.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key!r} must be a table ([{key}]), got {_show(value)}")
            for sub, sub_value in value.items():
                take(key, sub, sub_value, f"[{key}] ")
        elif isinstance(value, dict):
            raise ConfigError(f"{path}: unknown table [{key}] (known: {', '.join(f'[{t}]' for t in TABLES)})")
        else:
            take("node", key, value, "")
    return found


def _convert(opt: Option, value: Any, where: str, *, native: bool) -> Any:
    """One value from one source, checked: ``native`` values come typed (TOML, bool flags),
    others are text (environment, flags)."""
    try:
        return _convert_value(opt, value, native)
    except _Invalid as bad:
        raise ConfigError(f"{where}: {bad}") from None


class _Invalid(Exception):
    """Internal: the problem with one value, before the source is prefixed."""


def _convert_value(opt: Option, value: Any, native: bool) -> Any:
    got = _show(value) if native else repr(value)
    kind = opt.kind
    if kind == "list":
        if native:
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise _Invalid(f"must be a list of strings, got {got}")
            items = value
        else:
            items = [v for v in _LIST_SPLIT.split(value) if v]
        for item in items:
            problem = opt.check(item) if opt.check else None
            if problem:
                raise _Invalid(f"item {problem}")
        return list(items)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if native:
            raise _Invalid(f"must be true or false, got {got}")
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise _Invalid(f"must be one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}, got {got}")
    if kind == "int":
        span = f" {opt.lo}..{opt.hi}" if opt.hi is not None else (" >= 0" if opt.lo == 0 else "")
        try:
            if native:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError
                number = value
            else:
                number = int(value.strip())
        except ValueError:
            raise _Invalid(f"must be an integer{span}, got {got}") from None
        if (opt.lo is not None and number < opt.lo) or (opt.hi is not None and number > opt.hi):
            raise _Invalid(f"must be an integer{span}, got {got}")
        return number
    if kind == "float":
        try:
            if native and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError
            number = float(value)
        except ValueError:
            raise _Invalid(f"must be a positive number of seconds, got {got}") from None
        if not (math.isfinite(number) and number > 0):
            raise _Invalid(f"must be a positive number of seconds, got {got}")
        return number
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {got}")
    if kind == "choice":
        word = value.strip().lower()
        if word not in opt.choices:
            raise _Invalid(f"must be one of {', '.join(opt.choices)}, got {got}")
        return word
    problem = opt.check(value) if opt.check else None
    if problem:
        raise _Invalid(problem)
    return value


def _check_whole(resolved: ResolvedConfig) -> None:
    """Rules that tie options together, named with the sources of the values involved."""
    cfg, src = resolved.config, resolved.sources
    if not cfg.id:
        raise ConfigError("id: a node id is required (--id, MESH_ID or id in the config file)")
    if cfg.id in cfg.raft_voters or cfg.raft_member:
        if not cfg.data_dir:
            why = (f"it is among raft_voters, from {src['raft_voters']}" if cfg.id in cfg.raft_voters
                   else f"raft_member is true, from {src['raft_member']}")
            raise ConfigError(f"data_dir: node {cfg.id!r} keeps a Raft log ({why}) and needs a data folder "
                              "for it: set --data-dir, MESH_DATA_DIR or data_dir")
    if cfg.keys and cfg.insecure:
        raise ConfigError(f"insecure: keys are given (from {src['keys']}) and insecure is set (from "
                          f"{src['insecure']}): choose one")
    if cfg.keys and not cfg.trust:
        raise ConfigError(f"trust: keys are given (from {src['keys']}) but no trust store: set --trust, "
                          "MESH_TRUST or trust in [security] (the cluster's public keys)")
    try:
        SwimConfig(**cfg.gossip)
    except ValueError as exc:
        given = ", ".join(f"{k} = {v} from {src['gossip.' + k]}" for k, v in cfg.gossip.items())
        raise ConfigError(f"gossip: {exc} ({given or 'defaults'})") from None


def render_toml(resolved: ResolvedConfig) -> str:
    """The effective configuration as TOML; each value's source in a comment after it. Unset
    optional values appear as comments. Parsing the text back (``--config``) gives the same
    configuration."""
    head = ["# Effective configuration of python -m mesh.node.",
            "# Precedence: flags > MESH_* environment > config file > defaults."]
    if resolved.config_path is not None:
        head.append(f"# Config file: {resolved.config_path} (from {resolved.config_named_by}).")
    lines = list(head)
    for table in TABLES:
        rows = []
        for opt in (o for o in OPTIONS if o.table == table):
            value = resolved.value(opt.key)
            source = resolved.sources[opt.key]
            if value is None:
                rows.append((f"# {opt.toml_key} is not set", str(source)))
            else:
                rows.append((f"{opt.toml_key} = {_toml_value(value)}", str(source)))
        width = max(len(r[0]) for r in rows)
        lines += ["", f"[{table}]"] + [f"{text:<{width}}  # {source}" for text, source in rows]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are TOML basic-string escapes; TOML also forbids a raw DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _show(value: Any) -> str:
    """A TOML value as the file spells it, for messages."""
    try:
        return _toml_value(value)
    except TypeError:
        return type(value).__name__
