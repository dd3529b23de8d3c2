"""What an ``@rpc`` method looks like from outside the mesh: a JSON Schema of its parameters
and of its result, and a description, for the MCP and A2A bridges (and any tool that lists
an agent's methods).

Theory of operation. Everything comes from the method itself, read once when it is
described: the parameters and their type hints give the input schema (an object with one
property per parameter; a parameter without a default is required; ``**kwargs`` lets other
properties through, otherwise none are allowed), the return annotation gives the output
schema, and the docstring gives the words: its first paragraph is the method's description
and an ``Args:`` section (Google style), ``:param name:`` fields (Sphinx) or a
``Parameters`` block (NumPy) describe the parameters. A hint we cannot read becomes ``{}``
(anything), never an error: describing an agent must not fail because of one annotation.

A result that is not a JSON object is wrapped as ``{"result": value}``, the convention MCP
servers use for structured output (the official SDK's server does the same), so the output
schema is always an object. :func:`is_result_wrapper` recognises that shape on the way back.

Arguments cross JSON (and, in A2A, protobuf's ``Value``, which keeps every number as a
double); :func:`coerce` turns whole floats back into ints where the schema asks for an
integer, so ``add(a: int, b: int)`` receives ``2``, not ``2.0``.

Type mapping: ``int`` integer, ``float`` number, ``str`` string, ``bool`` boolean, ``None``
null, ``list[X]``/``Sequence[X]``/``set[X]`` array, ``tuple[X, Y]`` fixed array,
``dict[str, X]``/``Mapping`` object, ``X | None``/``Optional[X]``/``Union`` anyOf,
``Literal[...]`` and ``Enum`` enum, ``TypedDict`` and dataclasses objects with their fields
(the handler receives a dict: msgpack has no dataclasses), ``Annotated[X, "text"]`` X with a
description.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import logging
import re
import types
import typing
from collections import abc
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

MAX_DEPTH = 8                 # nested and recursive types stop here (as "anything")
SCHEMA_ATTR = "__mesh_schema__"   # a handler may carry its schema ready-made (dynamic handlers)
TEXT_ATTR = "__mesh_text__"       # set by @text_entry

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
_SEQUENCES = (list, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection)
_SETS = (set, frozenset, abc.Set, abc.MutableSet)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)


@dataclass(frozen=True, slots=True)
class MethodSchema:
    """One method as the bridges show it. ``positional`` names the positional-only
    parameters (they are passed by position, in this order); ``result_wrapped`` says the
    result travels as ``{"result": value}``; ``text`` marks the agent's text entry point."""

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    positional: tuple[str, ...] = ()
    result_wrapped: bool = True
    text: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data (msgpack and JSON can carry it)."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema,
                "output_schema": self.output_schema, "positional": list(self.positional),
                "result_wrapped": self.result_wrapped, "text": self.text}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodSchema:
        return cls(str(data["name"]), str(data.get("description") or ""), dict(data.get("input_schema") or {}),
                   data.get("output_schema"), tuple(data.get("positional") or ()),
                   bool(data.get("result_wrapped", True)), bool(data.get("text", False)))


def text_entry(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an ``@rpc`` method as the agent's text entry point: the A2A bridge sends a
    message made of text to it (the text goes to its first ``str`` parameter). Stack it
    with ``@mesh.rpc`` in either order."""
    setattr(fn, TEXT_ATTR, True)
    return fn


# -- docstrings -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Docstring:
    """The parts of a docstring the schemas use."""

    summary: str
    params: dict[str, str]
    returns: str


_GOOGLE_ARGS = re.compile(r"^(args|arguments|parameters|params|keyword args|keyword arguments|other parameters):\s*$",
                          re.IGNORECASE)
_GOOGLE_RETURNS = re.compile(r"^(returns?|yields?):\s*$", re.IGNORECASE)
_GOOGLE_SECTION = re.compile(r"^[A-Z][A-Za-z ]{1,30}:\s*$")
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:\s*(.*)$")
_SPHINX_RETURNS = re.compile(r"^:returns?:\s*(.*)$")
_SPHINX_FIELD = re.compile(r"^:\w+")
_NUMPY_RULE = re.compile(r"^-{3,}\s*$")
_NUMPY_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?::.*)?$")


def parse_docstring(doc: str | None) -> Docstring:
    """Split a docstring into its first paragraph (lines joined), per-parameter text and
    the text about the result. Google, Sphinx and NumPy styles; anything else is prose."""
    if not doc:
        return Docstring("", {}, "")
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for i, line in enumerate(lines):
        text = line.strip()
        if not text or _GOOGLE_SECTION.match(text) or _SPHINX_FIELD.match(text) or _numpy_header(lines, i):
            break
        summary.append(text)
    params: dict[str, str] = {}
    returns: list[str] = []
    _google(lines, params, returns)
    _sphinx(lines, params, returns)
    _numpy(lines, params, returns)
    return Docstring(" ".join(summary), params, " ".join(returns).strip())


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google(lines: list[str], params: dict[str, str], returns: list[str]) -> None:
    section = None
    base = -1
    current: str | None = None
    for line in lines:
        text = line.strip()
        if _GOOGLE_ARGS.match(text) and _indent(line) == 0:
            section, base, current = "args", -1, None
            continue
        if _GOOGLE_RETURNS.match(text) and _indent(line) == 0:
            section, base, current = "returns", -1, None
            continue
        if section is None:
            continue
        if not text:
            continue
        if _indent(line) == 0:                  # a new section or prose ends this one
            section = None
            continue
        if section == "returns":
            returns.append(text)
            continue
        if base < 0:
            base = _indent(line)
        entry = _GOOGLE_ENTRY.match(text) if _indent(line) == base else None
        if entry:
            current = entry.group(1)
            params[current] = entry.group(3).strip()
        elif current is not None:               # a continuation line, indented further
            params[current] = (params[current] + " " + text).strip()


def _sphinx(lines: list[str], params: dict[str, str], returns: list[str]) -> None:
    current: list[str] | None = None
    key = ""
    for line in lines:
        text = line.strip()
        param = _SPHINX_PARAM.match(text)
        ret = _SPHINX_RETURNS.match(text)
        if param:
            key, current = param.group(1), [param.group(2).strip()]
        elif ret:
            key, current = "", [ret.group(1).strip()]
        elif _SPHINX_FIELD.match(text) or not text:
            current = None
            continue
        elif current is not None and _indent(line) > 0:
            current.append(text)
        else:
            current = None
            continue
        joined = " ".join(part for part in current if part)
        if key:
            params[key] = joined
        else:
            returns[:] = [joined]


def _numpy_header(lines: list[str], i: int) -> bool:
    """Line ``i`` is a NumPy section title (underlined by dashes on the next line)."""
    return i + 1 < len(lines) and bool(lines[i].strip()) and bool(_NUMPY_RULE.match(lines[i + 1].strip()))


def _numpy(lines: list[str], params: dict[str, str], returns: list[str]) -> None:
    section = None
    current: str | None = None
    for i, line in enumerate(lines):
        text = line.strip()
        if _numpy_header(lines, i):
            name = text.lower()
            section = "args" if name in ("parameters", "other parameters") else (
                "returns" if name in ("returns", "yields") else "other")
            current = None
            continue
        if _NUMPY_RULE.match(text) or section in (None, "other") or not text:
            continue
        if _indent(line) == 0:
            entry = _NUMPY_ENTRY.match(text)
            current = entry.group(1) if entry and section == "args" else None
            if current is not None:
                params[current] = ""
        elif section == "returns":
            returns.append(text)
        elif current is not None:
            params[current] = (params[current] + " " + text).strip()


# -- types ----------------------------------------------------------------------------------

def type_schema(tp: Any, depth: int = 0) -> dict[str, Any]:
    """The JSON Schema of a type hint; ``{}`` (anything) for what it cannot express."""
    if depth > MAX_DEPTH or tp is Any or tp is object or tp is inspect.Parameter.empty:
        return {}
    if tp is None:
        tp = type(None)
    if isinstance(tp, (str, typing.ForwardRef)):
        return {}                               # an annotation that did not resolve
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        schema = dict(type_schema(args[0], depth + 1))
        words = [a for a in tp.__metadata__ if isinstance(a, str)]
        if words:
            schema["description"] = " ".join(words)
        return schema
    if origin is typing.Literal:
        return _enum_schema(list(args))
    if origin is typing.Union or origin is types.UnionType:
        members = [type_schema(a, depth + 1) for a in args]
        unique: list[dict[str, Any]] = []
        for m in members:
            if m not in unique:
                unique.append(m)
        if any(m == {} for m in unique):
            return {}
        return unique[0] if len(unique) == 1 else {"anyOf": unique}
    if isinstance(tp, type) and tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema([m.value for m in tp])
    if typing.is_typeddict(tp):
        return _typeddict_schema(tp, depth)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_schema(tp, depth)
    container = origin if origin is not None else tp
    if container is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _array(args[0] if args else Any, depth)
        if args == ((),):                       # tuple[()]
            return {"type": "array", "maxItems": 0}
        items = [type_schema(a, depth + 1) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if container in _SETS:
        schema = _array(args[0] if args else Any, depth)
        schema["uniqueItems"] = True
        return schema
    if container in _SEQUENCES and container is not str:
        return _array(args[0] if args else Any, depth)
    if container in _MAPPINGS:
        schema: dict[str, Any] = {"type": "object"}
        if len(args) == 2 and args[0] is str:
            values = type_schema(args[1], depth + 1)
            if values:
                schema["additionalProperties"] = values
        return schema
    return {}


def _array(item: Any, depth: int) -> dict[str, Any]:
    items = type_schema(item, depth + 1)
    return {"type": "array", "items": items} if items else {"type": "array"}


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    values = [v.value if isinstance(v, enum.Enum) else v for v in values]
    schema: dict[str, Any] = {"enum": values}
    kinds = {_JSON_TYPES.get(type(v)) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    return schema


def _hints(obj: Any) -> dict[str, Any]:
    """Resolved type hints; where resolving all at once fails (a name only imported for
    type checkers), each annotation is tried alone and the failures are left out."""
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:
        pass
    out: dict[str, Any] = {}
    annotations = getattr(obj, "__annotations__", {}) or {}
    module = inspect.getmodule(obj)
    space = dict(vars(module)) if module is not None else {}
    space.update(getattr(obj, "__globals__", {}) or {})
    for name, value in annotations.items():
        if isinstance(value, str):
            try:
                value = eval(value, space)      # noqa: S307 - the module's own annotation text
            except Exception:
                continue
        out[name] = value
    return out


def _typeddict_schema(tp: Any, depth: int) -> dict[str, Any]:
    hints = _hints(tp)
    required = sorted(getattr(tp, "__required_keys__", hints.keys()))
    schema: dict[str, Any] = {"type": "object", "title": tp.__name__,
                              "properties": {k: type_schema(v, depth + 1) for k, v in hints.items()}}
    if required:
        schema["required"] = required
    return schema


def _dataclass_schema(tp: Any, depth: int) -> dict[str, Any]:
    hints = _hints(tp)
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(tp):
        prop = type_schema(hints.get(f.name, Any), depth + 1)
        if f.default is not dataclasses.MISSING:
            if _jsonable(f.default):
                prop = dict(prop, default=_plain(f.default))
        elif f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        props[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "title": tp.__name__, "properties": props}
    if required:
        schema["required"] = required
    doc = parse_docstring(tp.__doc__).summary if tp.__doc__ and not tp.__doc__.startswith(tp.__name__ + "(") else ""
    if doc:
        schema["description"] = doc
    return schema


def _jsonable(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v, depth + 1) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    """A JSON-able default as JSON has it (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- methods and agents ---------------------------------------------------------------------

def is_object_schema(schema: dict[str, Any] | None) -> bool:
    return bool(schema) and schema.get("type") == "object"


def result_wrapper(schema: dict[str, Any]) -> dict[str, Any]:
    """The output schema of a result wrapped as ``{"result": value}``."""
    return {"type": "object", "properties": {"result": schema}, "required": ["result"]}


def is_result_wrapper(schema: dict[str, Any] | None) -> bool:
    """True for an object schema whose only (and required) property is ``result``: the
    shape MCP servers give results that are not objects."""
    return (is_object_schema(schema) and set(schema.get("properties") or ()) == {"result"}
            and list(schema.get("required") or ()) == ["result"])


def method_schema(fn: Callable[..., Any], name: str | None = None) -> MethodSchema:
    """Describe one method (bound or not). A function that carries a ready-made description
    in ``__mesh_schema__`` (a dict as :meth:`MethodSchema.to_dict` makes) is taken as is."""
    name = name or getattr(fn, "__name__", "method")
    ready = getattr(fn, SCHEMA_ATTR, None)
    if isinstance(ready, dict):
        return MethodSchema.from_dict(dict(ready, name=name))
    doc = parse_docstring(inspect.getdoc(fn))
    hints = _hints(getattr(fn, "__func__", fn))
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    props: dict[str, Any] = {}
    required: list[str] = []
    positional: list[str] = []
    extra = False
    for pname, param in (sig.parameters.items() if sig is not None else ()):
        if param.kind is param.VAR_POSITIONAL:
            continue                            # cannot be named in a JSON object
        if param.kind is param.VAR_KEYWORD:
            extra = True
            continue
        prop = dict(type_schema(hints.get(pname, Any)))
        if doc.params.get(pname):
            prop["description"] = doc.params[pname]
        if param.default is param.empty:
            required.append(pname)
        elif _jsonable(param.default):
            prop["default"] = _plain(param.default)
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(pname)
        props[pname] = prop
    input_schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        input_schema["required"] = required
    input_schema["additionalProperties"] = extra
    output_schema = None
    wrapped = True
    if "return" in hints:
        result = type_schema(hints["return"])
        if doc.returns:
            result = dict(result, description=doc.returns)
        if is_object_schema(result):
            output_schema, wrapped = result, False
        else:
            output_schema = result_wrapper(result)
    return MethodSchema(name, doc.summary, input_schema, output_schema, tuple(positional), wrapped,
                        bool(getattr(fn, TEXT_ATTR, False)))


def describe_agent(agent: Any) -> dict[str, Any]:
    """Plain data about an agent: name, description (its ``description`` attribute if it is
    a string, else the first paragraph of its class docstring), capabilities, and
    ``methods``: rpc name -> :meth:`MethodSchema.to_dict`. Reads the agent's own
    ``rpc_table``, so handlers an agent installs for itself at run time are included."""
    methods: dict[str, Any] = {}
    for rpc_name, spec in sorted(agent.rpc_table.items()):
        fn = getattr(agent, spec.attr, None)
        if fn is None:
            continue
        try:
            methods[rpc_name] = method_schema(fn, rpc_name).to_dict()
        except Exception:                       # one odd method must not hide the others
            log.exception("cannot describe %s.%s", agent.name, rpc_name)
    description = getattr(agent, "description", None)
    if not isinstance(description, str):
        description = parse_docstring(type(agent).__doc__).summary
    return {"name": agent.name, "description": description, "capabilities": list(agent.capabilities),
            "methods": methods}


def coerce(value: Any, schema: dict[str, Any] | None, depth: int = 0) -> Any:
    """``value`` with whole floats made ints wherever ``schema`` wants an integer (JSON
    numbers from some clients, and protobuf's ``Value``, lose the difference). Nothing
    else changes; values the schema does not describe pass through."""
    if not isinstance(schema, dict) or not schema or depth > MAX_DEPTH:
        return value
    alternatives = schema.get("anyOf")
    if isinstance(alternatives, list):
        for alt in alternatives:
            if isinstance(alt, dict) and _fits(value, alt.get("type")):
                return coerce(value, alt, depth + 1)
        return value
    kind = schema.get("type")
    if isinstance(value, float) and value.is_integer() and (
            kind == "integer" or (isinstance(kind, list) and "integer" in kind and "number" not in kind)):
        return int(value)
    if isinstance(value, list):
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [coerce(v, prefix[i] if i < len(prefix) else None, depth + 1) for i, v in enumerate(value)]
        items = schema.get("items")
        return [coerce(v, items, depth + 1) for v in value] if isinstance(items, dict) else value
    if isinstance(value, dict):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        extra = schema.get("additionalProperties")
        return {k: coerce(v, props[k] if k in props else (extra if isinstance(extra, dict) else None), depth + 1)
                for k, v in value.items()}
    return value


def _fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value could be an instance of schema type ``kind`` (for anyOf)."""
    if isinstance(value, bool):
        return kind == "boolean"
    if isinstance(value, float):
        return kind == "integer" and value.is_integer() or kind == "number"
    if isinstance(value, int):
        return kind in ("integer", "number")
    if isinstance(value, list):
        return kind == "array"
    if isinstance(value, dict):
        return kind == "object"
    return False
