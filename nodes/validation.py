"""Checks of node inputs that ComfyUI's own validation lets through (shared by the nodes; no ComfyUI import).

ComfyUI converts a FLOAT input with ``float()`` and then checks ``min``/``max``, but ``nan < min`` and
``nan > max`` are both False, so an API prompt's ``NaN`` (or ``Infinity``, where no max is set) reaches the node:
``strength=NaN`` "succeeds" with a black image, ``end=NaN`` fails deep inside the sampler. A STRING input is
converted with ``str()``, so an API prompt's ``null`` arrives as the text ``"None"``. Call these at the top of a
node's function; each raises ``ValueError`` naming the node, the field, the value and the fix.
"""
from __future__ import annotations

import math
import numbers


def _shown(value) -> str:
    text = repr(value) if isinstance(value, (str, bool, numbers.Number)) or value is None else \
        f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def finite(name: str, value, node: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` as a float, if it is a finite real number (within ``[minimum, maximum]`` when given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{node}: {name} is {_shown(value)}; it must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        bounds = "" if minimum is None and maximum is None else \
            f" between {minimum if minimum is not None else '-inf'} and {maximum if maximum is not None else 'inf'}"
        raise ValueError(f"{node}: {name} is {_shown(value)}; it must be a finite number{bounds} (NaN and "
                         f"infinity are not allowed); set the widget to a real value")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{node}: {name} is {number:g}; it must be between {minimum:g} and {maximum:g}"
                         if minimum is not None and maximum is not None else
                         f"{node}: {name} is {number:g}; it must be "
                         + (f"at least {minimum:g}" if minimum is not None else f"at most {maximum:g}"))
    return number


def text(name: str, value, node: str) -> str:
    """``value`` if it is text that is not the word ``None`` (how ComfyUI passes on a ``null`` STRING input)."""
    if value is None or (isinstance(value, str) and value.strip() == "None"):
        raise ValueError(f"{node}: {name} is {_shown(value)}, which is what an unset value (null in an API prompt) "
                         f"becomes; write the text itself, e.g. 'a red car'")
    if not isinstance(value, str):
        raise ValueError(f"{node}: {name} is {_shown(value)}; it must be text")
    return value
