"""The fuzzing tier's strategies: hostile payloads and topics for every topic
of topics.md (the templates and well-formed examples are
:mod:`fogmesh.bench.hostile_stream`'s, which ``fogmesh bench hostile`` sends to live
agents). Each ``test_fuzz_*.py`` feeds them to a decoder or a consumer's
handler and checks that nothing raises out of it, and what it decides.

Examples stay modest (``FUZZ``: a few seconds for the whole tier);
``FOGMESH_FUZZ_EXAMPLES=5000`` runs the tier for longer."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fogmesh.bench.hostile_stream import LONG_ID, ODD_IDS, TEMPLATES, deep_bytes, dumps, examples, nested

ROOT = "fog/v1"
VALID = examples(ROOT, agent="a2", device="dev")

FUZZ = settings(max_examples=int(os.environ.get("FOGMESH_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 64), max_value=2 ** 64),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from([*ODD_IDS, "on", "online", "offline", "s" * 300]))
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
BIG = [nested(130), nested(300), "x" * 70_000, {str(i): i for i in range(1000)}, [1.5] * 2000,
       {"items": 1, "get": 2, "keys": []}]
hostile_values = st.one_of(json_values, st.sampled_from(BIG))


@st.composite
def mutated(draw: Any, doc: Any) -> Any:
    """``doc`` with fields replaced by hostile values, removed, or wrong further down."""
    if not isinstance(doc, dict) or not doc:
        return draw(hostile_values)
    out = dict(doc)
    for key in draw(st.lists(st.sampled_from(sorted(out)), min_size=1, max_size=3, unique=True)):
        how = draw(st.sampled_from(["replace", "replace", "drop", "deeper"]))
        if how == "drop":
            out.pop(key)
        elif how == "deeper" and isinstance(out[key], dict):
            out[key] = draw(mutated(out[key]))
        else:
            out[key] = draw(hostile_values)
    return out


def payloads(kind: str | None = None) -> st.SearchStrategy[bytes]:
    """Bytes for a topic whose document is ``kind``: arbitrary bytes, JSON of
    any shape, nesting past what re-encodes, payloads over the size limit,
    and (most often) that kind's well-formed document with fields gone wrong."""
    docs = mutated(VALID[kind]) if kind in VALID else json_values
    return st.one_of(
        st.binary(max_size=64),
        json_values.map(dumps),
        st.sampled_from([deep_bytes(130), deep_bytes(300), deep_bytes(1100), b"{" * 3000, b"",
                         b'{"id": "' + b"h" * (300 * 1024) + b'"}', b"on", b"\xff\xfe", b"1e400"]),
        docs.map(dumps), docs.map(dumps), docs.map(dumps))


segments = st.one_of(st.sampled_from([*ODD_IDS, "a1", "a2", "dev", "farm", "lamp", "camera"]),
                     st.text(st.characters(blacklist_characters="/+#\x00", blacklist_categories=["Cs"]),
                             max_size=12),
                     st.just(LONG_ID))


@st.composite
def topic_of(draw: Any, template: str, root: str = ROOT) -> str:
    levels = [draw(segments) if level.startswith("{") else level for level in template.split("/")]
    return f"{root}/" + "/".join(levels)


@st.composite
def messages(draw: Any, root: str = ROOT, *, only: tuple[str, ...] = ()) -> tuple[str, bytes]:
    """A topic of topics.md (its id levels valid, odd or over-long) and a hostile payload for it;
    ``only``: among these document kinds."""
    choices = [t for t in TEMPLATES if not only or t[1] in only]
    template, kind = draw(st.sampled_from(choices))
    return draw(topic_of(template, root)), draw(payloads(kind))


@st.composite
def device_tasks(draw: Any, root: str = ROOT) -> tuple[str, bytes]:
    """A task on ``tasks/{device}`` (the level valid, odd or over-long) that
    mostly replies where that device may be answered, with fields gone wrong."""
    device = draw(segments)
    doc = dict(VALID["task"], reply_to=f"{root}/replies/{device}")
    return f"{root}/tasks/{device}", draw(st.one_of(mutated(doc).map(dumps), payloads("task")))


#: Each of these in each field of each document, in turn (the catalogue's systematic half).
WRONG = [None, True, -1, 1.5, 1e308, "s" * 300, "x" * 70_000, "$sys", "", [], [1, "a"], {}, {"items": 1},
         nested(130), nested(300), {"k": nested(250)}]


def paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field of ``doc``, nested objects' (and objects in lists') fields included."""
    out: list[tuple[str, ...]] = []
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return paths(doc[0], prefix + ("0",))
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append(prefix + (key,))
            out += paths(value, prefix + (key,))
    return out


def replaced(doc: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    if isinstance(doc, list):
        return [replaced(doc[0], path[1:], value), *doc[1:]]
    return {**doc, path[0]: replaced(doc[path[0]], path[1:], value)}


def catalogue(root: str = ROOT, *, names: tuple[str, ...] = ("a2", "a1", "dev", LONG_ID, "", "$x", "sp ace")
              ) -> list[tuple[str, bytes]]:
    """Every topic of topics.md with each id level in ``names``, and each
    document (speaking for ``names[0]``, on its topics) with each of
    :data:`WRONG` in each of its fields (nested ones too), plus the odd
    payloads: deterministic, so the classes of hostile input a fuzzer may
    take long to draw are always tried."""
    valid = examples(root, agent=names[0], device=names[0], site=names[0])
    bodies: dict[str, list[bytes]] = {}
    for kind, doc in valid.items():
        out = [dumps(doc), b"", b"\xff", b"null", b"[]", deep_bytes(300), deep_bytes(2000)]
        for path in paths(doc):
            for wrong in WRONG if len(path) == 1 else WRONG[:8]:
                out.append(dumps(replaced(doc, path, wrong)))
        bodies[kind] = out
    messages: list[tuple[str, bytes]] = []
    for template, kind in TEMPLATES:
        for i, name in enumerate(names):
            topic = f"{root}/" + "/".join(name if level.startswith("{") else level for level in template.split("/"))
            if "tasks/" in template and kind == "task":   # a task its device may be answered for
                doc = dict(valid["task"], reply_to=f"{root}/replies/{name}")
                messages += [(topic, dumps({**doc, "args": wrong})) for wrong in WRONG]
            messages += [(topic, body) for body in (bodies[kind] if i == 0 else bodies[kind][:7])]
    return messages


def forged_presence(agent: str, says: str) -> bytes:
    return dumps(dict(VALID["presence"], agent=says))
