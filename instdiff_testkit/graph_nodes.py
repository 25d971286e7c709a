"""Test-only ComfyUI nodes that let a host test put prepared Python objects into an API prompt and take values out
of it: ``provider`` (no inputs, returns the prepared tuple), ``sink`` (an output node taking any of the given
types), ``capture`` (an output node keeping what it receives). Register them per test with
``monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, key, cls)`` so nothing outlives the test."""
from __future__ import annotations


class _Provide:
    CATEGORY = "_for_testing"
    FUNCTION = "get"
    VALUE: tuple = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get(self):
        return self.VALUE


def provider(name: str, types: tuple, value: tuple) -> type:
    """A node class with outputs ``types`` that returns ``value``."""
    if len(types) != len(value):
        raise ValueError(f"provider {name}: {len(types)} output types but {len(value)} values")
    return type(name, (_Provide,), {"RETURN_TYPES": tuple(types), "VALUE": tuple(value)})


class _Sink:
    CATEGORY = "_for_testing"
    FUNCTION = "take"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    INPUTS: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"optional": {name: (kind,) for name, kind in cls.INPUTS.items()}}

    def take(self, **_values):
        return ()


def sink(name: str, inputs: dict) -> type:
    """An output node with optional inputs ``{name: type}`` that ignores them (a graph may end in any type)."""
    return type(name, (_Sink,), {"INPUTS": dict(inputs)})


class _Capture:
    CATEGORY = "_for_testing"
    FUNCTION = "keep"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    TYPE = "*"
    seen: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (cls.TYPE, {})}}

    def keep(self, value):
        type(self).seen.append(value)
        return {}


def capture(name: str, kind: str) -> type:
    """An output node with one input ``value`` of type ``kind``; what it receives is appended to ``cls.seen``."""
    return type(name, (_Capture,), {"TYPE": kind, "seen": []})
