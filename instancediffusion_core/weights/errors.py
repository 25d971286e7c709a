"""The one error type of checkpoint reading, in its own module so every reading module can raise it."""
from __future__ import annotations

OFFICIAL_SOURCE_HINT = ("the official instancediffusion_sd15.pth (Hugging Face xudongw/InstanceDiffusion) or "
                        "logtd's fusers.ckpt + position_net.ckpt + scaleu.ckpt")


class CheckpointError(ValueError):
    """A weights file cannot be used; the message says what was found, what was expected and what to do."""


_REPR_DEPTH = 4          # nesting shown before "..."
_REPR_ITEMS = 8          # items per container shown before "..."


def short_repr(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, computed in O(limit) whatever ``value`` is.

    Messages quote values found in files, and a file can hold things whose full ``repr`` never finishes: a pickled
    DAG of shared lists (40 levels, 1.7 KB of pickle, a 2**40-character repr), integers of millions of digits
    (``repr`` raises beyond 4300 digits and is quadratic below), strings of hundreds of MB. So this walks at most
    ``_REPR_DEPTH`` levels and ``_REPR_ITEMS`` items per container, slices strings before quoting them, writes big
    integers as their bit length and other objects as their type name."""
    parts: list[str] = []
    budget = [limit + 3]

    def emit(text: str) -> None:
        parts.append(text)
        budget[0] -= len(text)

    def walk(v, depth: int) -> None:
        if budget[0] <= 0:
            return
        if v is None or isinstance(v, (bool, float, complex)):
            emit(repr(v))
        elif isinstance(v, int):
            emit(repr(v) if v.bit_length() <= 256 else f"<int of {v.bit_length()} bits>")
        elif isinstance(v, (str, bytes, bytearray)):
            cut = v[:max(budget[0], 0) + 1]
            emit(repr(cut if type(cut) in (str, bytes) else bytes(cut)) + ("..." if len(v) > len(cut) else ""))
        elif isinstance(v, (dict, list, tuple, set, frozenset)):
            if isinstance(v, dict):
                opener, closer = ("{", "}") if type(v) is dict else (f"{type(v).__name__}({{", "})")
            elif isinstance(v, list):
                opener, closer = "[", "]"
            elif isinstance(v, tuple):
                opener, closer = "(", ",)" if len(v) == 1 else ")"
            else:
                opener, closer = f"{type(v).__name__}({{", "})"
            if depth >= _REPR_DEPTH:
                emit(opener + "..." + closer)
                return
            emit(opener)
            items = iter(v.items()) if isinstance(v, dict) else iter(v)
            for i, item in enumerate(items):
                if i:
                    emit(", ")
                if i >= _REPR_ITEMS or budget[0] <= 0:
                    emit("...")
                    break
                if isinstance(v, dict):
                    walk(item[0], depth + 1)
                    emit(": ")
                    walk(item[1], depth + 1)
                else:
                    walk(item, depth + 1)
            emit(closer)
        else:
            name = getattr(type(v), "_global", None)        # the pickle reader's inert placeholders
            if isinstance(name, str):
                emit(f"<inert {name[:60]}>")
            elif isinstance(v, type) or callable(v):
                emit(f"<{getattr(v, '__qualname__', type(v).__name__)!s:.60}>")
            else:
                emit(f"<{type(v).__qualname__:.60} object>")

    walk(value, 0)
    text = "".join(parts)
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def cut_text(text: str, limit: int = 300) -> str:
    """``text`` (an exception message, a name from a file) cut to ``limit`` characters."""
    text = str(text)
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."
