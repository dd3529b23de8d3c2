"""JSON Schemas of @rpc methods from type hints and docstrings (mesh.bridges.schema), and the
bridges' spec resolution (mesh.bridges.catalog). Pure: no sockets, no SDKs."""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, TypedDict, Union

import pytest

import mesh
from mesh.bridges.catalog import Target, resolve, safe_name
from mesh.bridges.schema import (MethodSchema, coerce, describe_agent, is_result_wrapper, method_schema,
                                 parse_docstring, text_entry, type_schema)

if TYPE_CHECKING:
    from decimal import Decimal     # only for type checkers: must not break describing


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Order(TypedDict):
    symbol: str
    qty: int


class Partial(TypedDict, total=False):
    note: str


@dataclass
class Point:
    """A point on the plane."""

    x: float
    y: float = 0.0
    tags: list[str] = field(default_factory=list)


@pytest.mark.parametrize("hint, schema", [
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (str, {"type": "string"}),
    (bool, {"type": "boolean"}),
    (None, {"type": "null"}),
    (Any, {}),
    (list, {"type": "array"}),
    (list[int], {"type": "array", "items": {"type": "integer"}}),
    (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
    (tuple[int, str], {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                       "minItems": 2, "maxItems": 2}),
    (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
    (dict, {"type": "object"}),
    (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
    (dict[str, Any], {"type": "object"}),
    (dict[int, str], {"type": "object"}),
    (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
    (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
    (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
    (Union[int, Any], {}),
    (Literal["a", "b"], {"enum": ["a", "b"], "type": "string"}),
    (Literal[1, "x"], {"enum": [1, "x"]}),
    (Side, {"enum": ["buy", "sell"], "type": "string"}),
    (Level, {"enum": [1, 2], "type": "integer"}),
    (Annotated[int, "how many"], {"type": "integer", "description": "how many"}),
    (list[list[bool]], {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}}}),
    (bytes, {}),
])
def test_type_schema(hint, schema):
    assert type_schema(hint) == schema


def test_typeddict_and_dataclass_become_objects_with_their_fields():
    assert type_schema(Order) == {"type": "object", "title": "Order", "required": ["qty", "symbol"],
                                  "properties": {"symbol": {"type": "string"}, "qty": {"type": "integer"}}}
    assert "required" not in type_schema(Partial)
    assert type_schema(Point) == {
        "type": "object", "title": "Point", "description": "A point on the plane.", "required": ["x"],
        "properties": {"x": {"type": "number"}, "y": {"type": "number", "default": 0.0},
                       "tags": {"type": "array", "items": {"type": "string"}}}}


def test_recursive_and_unresolvable_hints_become_anything():
    nested: Any = int
    for _ in range(20):
        nested = list[nested]
    deep = type_schema(nested)
    depth = 0
    while "items" in deep:
        deep, depth = deep["items"], depth + 1
    assert deep == {"type": "array"} and depth < 20       # cut at MAX_DEPTH, not an error
    assert type_schema("NotAType") == {}


GOOGLE = """Add two numbers.

    More words that are not the first paragraph.

    Args:
        a: the first
            number.
        b (int, optional): the second.
        **extra: ignored.

    Returns:
        The sum.
    """


def test_docstring_styles():
    g = parse_docstring(GOOGLE)
    assert g.summary == "Add two numbers."
    assert g.params == {"a": "the first number.", "b": "the second.", "extra": "ignored."}
    assert g.returns == "The sum."
    sphinx = parse_docstring("""Place an order
    on the book.

    :param order: what to place
        and where
    :param str side: buy or sell
    :type side: str
    :returns: the order id
    """)
    assert sphinx.summary == "Place an order on the book."
    assert sphinx.params == {"order": "what to place and where", "side": "buy or sell"}
    assert sphinx.returns == "the order id"
    numpy = parse_docstring("""Scale a vector.

    Parameters
    ----------
    v : list of float
        The vector.
    k : float
        The factor.

    Returns
    -------
    list of float
        The scaled vector.
    """)
    assert numpy.summary == "Scale a vector."
    assert numpy.params == {"v": "The vector.", "k": "The factor."}
    assert "scaled vector" in numpy.returns
    assert parse_docstring(None) == parse_docstring("") == parse_docstring("   ")


class Typed(mesh.Agent):
    """A typed agent.

    It has methods."""

    capabilities = ("typed",)

    @mesh.rpc
    async def add(self, a: int, b: int = 2) -> int:
        """Add two numbers.

        Args:
            a: the first.
            b: the second.

        Returns:
            The sum.
        """
        return a + b

    @mesh.rpc(name="place")
    def place_order(self, order: Order, side: Side, kind: Literal["limit", "market"] = "limit",
                    note: str | None = None, points: tuple[Point, ...] = (), *, flag: bool = False,
                    **extra: Any) -> dict[str, int]:
        """Place an order.

        :param order: the order
        :param side: which side
        """
        return {}

    @mesh.rpc
    def positional(self, x: int, y: str, /, z: float = 1.5, *rest: int) -> None:
        pass

    @mesh.rpc
    def untyped(self, a, b=None):
        return a

    @mesh.rpc
    @text_entry
    async def ask(self, question: str, verbose: bool = False) -> str:
        """Answer a question."""
        return question

    @mesh.rpc
    def exotic(self, when: Decimal, stamp: Any = object()) -> Decimal:   # noqa: F821 (type checkers only)
        return when


def test_method_schema_from_hints_defaults_and_docstring():
    add = method_schema(Typed("t").add, "add")
    assert add.description == "Add two numbers."
    assert add.input_schema == {"type": "object", "required": ["a"], "additionalProperties": False, "properties": {
        "a": {"type": "integer", "description": "the first."},
        "b": {"type": "integer", "description": "the second.", "default": 2}}}
    # an int result is wrapped as {"result": ...}, the shape MCP servers use
    assert add.output_schema == {"type": "object", "required": ["result"],
                                 "properties": {"result": {"type": "integer", "description": "The sum."}}}
    assert add.result_wrapped and is_result_wrapper(add.output_schema) and not add.text
    json.dumps(add.to_dict())                 # plain data
    assert MethodSchema.from_dict(add.to_dict()) == add


def test_method_schema_keywords_kwargs_enums_and_object_results():
    place = method_schema(Typed("t").place_order, "place")
    props = place.input_schema["properties"]
    assert place.name == "place" and place.input_schema["required"] == ["order", "side"]
    assert place.input_schema["additionalProperties"] is True          # **extra
    assert props["order"]["title"] == "Order" and props["order"]["description"] == "the order"
    assert props["side"] == {"enum": ["buy", "sell"], "type": "string", "description": "which side"}
    assert props["kind"]["default"] == "limit" and props["note"]["default"] is None
    assert props["points"]["default"] == [] and props["points"]["items"]["title"] == "Point"
    assert props["flag"] == {"type": "boolean", "default": False}       # keyword-only is fine by name
    assert place.output_schema == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert not place.result_wrapped                                     # already an object


def test_method_schema_positional_only_untyped_and_unresolvable():
    pos = method_schema(Typed("t").positional)
    assert pos.positional == ("x", "y")
    assert set(pos.input_schema["properties"]) == {"x", "y", "z"}       # *rest cannot be named
    assert pos.output_schema == {"type": "object", "required": ["result"], "properties": {"result": {"type": "null"}}}
    untyped = method_schema(Typed("t").untyped)
    assert untyped.input_schema["properties"] == {"a": {}, "b": {"default": None}}
    assert untyped.output_schema is None and untyped.description == ""
    exotic = method_schema(Typed("t").exotic)          # Decimal only exists for type checkers
    assert exotic.input_schema["properties"]["when"] == {} and "default" not in exotic.input_schema["properties"]["stamp"]
    assert exotic.output_schema is None                                 # unknown: no promise made


def test_describe_agent_lists_every_rpc_method_and_the_text_entry():
    described = describe_agent(Typed("typed-1"))
    assert described["name"] == "typed-1" and described["description"] == "A typed agent."
    assert described["capabilities"] == ["typed"]
    assert sorted(described["methods"]) == ["add", "ask", "exotic", "place", "positional", "untyped"]
    assert [m for m, d in described["methods"].items() if d["text"]] == ["ask"]
    json.dumps(described)


def test_describe_agent_uses_ready_made_schemas_of_dynamic_handlers():
    from mesh.agent import HandlerSpec

    agent = Typed("dyn")
    agent.description = "tools of a server"

    async def tool(**kwargs):
        return kwargs

    tool.__mesh_schema__ = {"name": "x", "description": "A tool.", "input_schema": {"type": "object"},
                            "output_schema": None, "result_wrapped": True}
    agent.tool = tool
    agent.rpc_table = dict(Typed.rpc_table, tool=HandlerSpec("tool", True))
    described = describe_agent(agent)
    assert described["description"] == "tools of a server"
    assert described["methods"]["tool"]["description"] == "A tool."
    assert described["methods"]["tool"]["name"] == "tool"
    assert "tool" not in describe_agent(Typed("plain"))["methods"]      # the class table is untouched


def test_coerce_turns_whole_floats_into_ints_where_the_schema_says_integer():
    schema = method_schema(Typed("t").place_order).input_schema
    args = {"order": {"symbol": "A", "qty": 3.0}, "side": "buy", "points": [{"x": 1.0, "y": 2.0}], "other": 4.0}
    assert coerce(args, schema) == {"order": {"symbol": "A", "qty": 3}, "side": "buy",
                                    "points": [{"x": 1.0, "y": 2.0}], "other": 4.0}
    assert type(coerce(args, schema)["order"]["qty"]) is int
    assert coerce(2.5, {"type": "integer"}) == 2.5                      # not whole: left for the method
    assert coerce(3.0, {"anyOf": [{"type": "integer"}, {"type": "null"}]}) == 3
    assert coerce(None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}) is None
    assert coerce([1.0, "a"], {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}) == [1, "a"]
    assert coerce({"k": 1.0}, {"type": "object", "additionalProperties": {"type": "integer"}}) == {"k": 1}
    assert coerce(True, {"type": "integer"}) is True
    assert coerce(5.0, {}) == 5.0 and coerce(5.0, None) == 5.0


def test_resolve_specs_against_a_directory():
    directory = {"pricer-1": ("n1", ("pricing",)), "pricer-2": ("n2", ("pricing",)),
                 "fs": ("n3", ("mcp.read", "mcp.write")), "a.b": ("n1", ())}
    targets = resolve(["pricer-1", "pricing.add", "pricing.quote", "mcp.read", "a.b", "fs.read", "fs",
                       "nobody", "nobody.method"], directory)
    assert targets == [Target("agent", "pricer-1", None), Target("capability", "pricing", frozenset({"add", "quote"})),
                       Target("capability", "mcp.read", None), Target("agent", "a.b", None),
                       Target("agent", "fs", None)]            # fs.read then fs: the whole agent wins
    assert resolve(["pricing", "pricing.add"], directory) == [Target("capability", "pricing", None)]
    assert safe_name("risk-1.v2") == "risk-1.v2" and safe_name("a b/c:d") == "a_b_c_d" and safe_name("") == "_"
