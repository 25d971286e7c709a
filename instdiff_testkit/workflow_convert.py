"""UI-format workflows (what the ComfyUI frontend's "Save" writes) -> checks and API-format prompts.

Why: the shipped `workflows/*.json` are loaded by people into the frontend, which rebuilds every node from the
server's `/object_info` and assigns `widgets_values` BY POSITION. A renamed, added or re-typed input therefore
breaks a saved workflow silently (values land in the wrong widget). This module reproduces the frontend's rules
(frontend 1.2x: widget order = `input_order`, required then optional; an INT named seed/noise_seed or with
`control_after_generate` is followed by a control value; a combo with `control_after_generate` also by a filter
text; an `image_upload` combo by an upload button value; non-widget sockets first in `inputs`, widget sockets
after them) so tests can check a workflow against the node definitions of a running host and convert it the way
`graphToPrompt` does (frontend-only nodes dropped, bypassed nodes passed through, muted nodes removed).

Additive changes of a node, which load fine in the frontend, are accepted: a new output after the saved ones, a new
optional input (socket, or widget after the saved widget values). Everything else that moves or changes what was
saved (a missing node type, a renamed/retyped/reordered input or output, a new required input, a widget value that
does not fit, a broken link) is reported.

Node definitions come from `object_info(node_type)` (instdiff_testkit/comfy_harness.py): any callable or dict that
returns the `/object_info/<type>` entry, or None/KeyError for an unknown type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# Nodes that exist only in the frontend: never sent to the server, never in NODE_CLASS_MAPPINGS.
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
COMBO_CONTROL_VALUES = CONTROL_VALUES + ("increment-wrap",)
UPLOAD_FLAGS = ("image_upload", "animated_image_upload")
UPLOAD_WIDGET = "upload"
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    """A workflow that the current node definitions cannot load or convert; the message lists every problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class InputSpec:
    """One input of a node definition, normalised over the V1 and V3 `/object_info` spellings."""
    name: str
    type: str                       # "INT", "COMBO", "MODEL", ...
    options: dict = field(default_factory=dict)
    choices: list | None = None     # combo values
    optional: bool = False

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        """The frontend adds a 'control after generate' widget right after this one."""
        flag = self.options.get("control_after_generate")
        if self.type == "INT":
            return bool(flag) if flag is not None else self.name in SEED_NAMES
        return self.type == "COMBO" and bool(flag)

    @property
    def has_upload(self) -> bool:
        return self.type == "COMBO" and any(self.options.get(f) for f in UPLOAD_FLAGS)


@dataclass
class WidgetSlot:
    """One entry of `widgets_values` as the frontend lays them out."""
    name: str
    kind: str                       # "value" (sent to the server), "control", "filter", "upload"
    spec: InputSpec


def _input_spec(name: str, raw, optional: bool) -> InputSpec:
    raw = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    kind = raw[0]
    options = dict(raw[1]) if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(kind, (list, tuple)):                  # V1 combo: the list IS the type
        return InputSpec(name, "COMBO", options, list(kind), optional)
    if kind == "COMBO":                                  # V3 combo: ["COMBO", {"options": [...]}]
        return InputSpec(name, "COMBO", options, list(options.get("options", [])), optional)
    return InputSpec(name, str(kind), options, None, optional)


def input_specs(info: dict) -> list[InputSpec]:
    """Inputs in the frontend's order: `input_order` required, then optional (hidden inputs are not inputs)."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {k: list(v) for k, v in inputs.items()}
    out = []
    for section in ("required", "optional"):
        defs = inputs.get(section) or {}
        names = [n for n in order.get(section, []) if n in defs] + [n for n in defs if n not in order.get(section, [])]
        out += [_input_spec(n, defs[n], section == "optional") for n in names]
    return out


def widget_slots(info: dict) -> list[WidgetSlot]:
    """The `widgets_values` layout of a node: every widget, with the extra control/filter/upload entries."""
    slots = []
    uploads = []
    for spec in input_specs(info):
        if not spec.is_widget:
            continue
        slots.append(WidgetSlot(spec.name, "value", spec))
        if spec.has_control:
            slots.append(WidgetSlot(spec.name, "control", spec))
            if spec.type == "COMBO":
                slots.append(WidgetSlot(spec.name, "filter", spec))
        if spec.has_upload:
            uploads.append(WidgetSlot(UPLOAD_WIDGET, "upload", spec))
    return slots + uploads[:1]       # the frontend adds one upload button, after the node's own widgets


def expected_inputs(info: dict) -> list[tuple[str, str, bool]]:
    """(name, type, is_widget) of the `inputs` entries the frontend creates: sockets first, then widget sockets."""
    specs = input_specs(info)
    sockets = [(s.name, s.type, False) for s in specs if not s.is_widget]
    widgets = [(s.name, s.type, True) for s in specs if s.is_widget]
    if any(s.has_upload for s in specs):
        widgets.append((UPLOAD_WIDGET, "IMAGEUPLOAD", True))
    return sockets + widgets


# --------------------------------------------------------------------------------------------- value checks

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def widget_value_problem(slot: WidgetSlot, value) -> str | None:
    """Why `value` is not valid for this widget under the current definition, or None."""
    spec, opts = slot.spec, slot.spec.options
    if slot.kind == "control":
        allowed = COMBO_CONTROL_VALUES if spec.type == "COMBO" else CONTROL_VALUES
        if value in allowed:
            return None
        return f"control_after_generate of '{spec.name}' is {value!r}; use one of {list(allowed)}"
    if slot.kind == "filter":
        return None if isinstance(value, str) else f"control filter of '{spec.name}' is {value!r}; it must be text"
    if slot.kind == "upload":
        return None if value == "image" else f"upload button value is {value!r}; the frontend saves 'image'"
    if spec.type == "INT":
        if not _is_number(value) or int(value) != value:
            return f"'{spec.name}' is {value!r}; it must be a whole number"
    elif spec.type == "FLOAT":
        if not _is_number(value):
            return f"'{spec.name}' is {value!r}; it must be a number"
    elif spec.type == "STRING":
        if not isinstance(value, str):
            return f"'{spec.name}' is {value!r}; it must be text"
    elif spec.type == "BOOLEAN":
        if not isinstance(value, bool):
            return f"'{spec.name}' is {value!r}; it must be true or false"
    elif spec.type == "COMBO":
        if value not in (spec.choices or []):
            shown = spec.choices if len(spec.choices or []) <= 12 else (spec.choices[:12] + ["..."])
            return f"'{spec.name}' is {value!r}, not one of the current choices {shown}"
        return None
    if spec.type in ("INT", "FLOAT"):
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and value < lo:
            return f"'{spec.name}' is {value!r}, below its minimum {lo}"
        if hi is not None and value > hi:
            return f"'{spec.name}' is {value!r}, above its maximum {hi}"
    return None


# --------------------------------------------------------------------------------------------- graph access

def _lookup(object_info, node_type: str):
    try:
        return object_info(node_type) if callable(object_info) else object_info.get(node_type)
    except KeyError:
        return None


def _links(workflow: dict) -> dict:
    """{link id: (from node, from slot, to node, to slot, type)} from the UI format's `links` list."""
    out = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):          # workflow schema 1 stores links as objects
            link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                    link.get("type")]
        lid, a, a_slot, b, b_slot, typ = link[:6]
        out[int(lid)] = (a, int(a_slot), b, int(b_slot), typ)
    return out


def _nodes(workflow: dict) -> dict:
    return {n["id"]: n for n in workflow.get("nodes", [])}


def _label(node: dict) -> str:
    title = node.get("title")
    return f"node {node['id']} ({node['type']}{', ' + repr(title) if title else ''})"


def _type_matches(out_type: str, in_type: str) -> bool:
    if out_type == "*" or in_type == "*":
        return True
    outs, ins = set(str(out_type).split(",")), set(str(in_type).split(","))   # "A,B" unions, as the frontend
    return bool(outs & ins)


def _output_types(node: dict, infos) -> list[str] | None:
    if node["type"] in VIRTUAL_NODE_TYPES:
        return None
    info = _lookup(infos, node["type"])
    return None if info is None else [str(t) if not isinstance(t, list) else "COMBO" for t in info["output"]]


def widget_values_by_name(node: dict, info: dict) -> dict:
    """{widget name: value} of the widgets sent to the server (control/filter/upload entries left out)."""
    slots = widget_slots(info)
    values = node.get("widgets_values") or []
    if isinstance(values, dict):            # a few custom nodes save a dict; ours and the core ones do not
        return {s.name: values[s.name] for s in slots if s.kind == "value" and s.name in values}
    out = {s.name: v for s, v in zip(slots, values) if s.kind == "value"}
    for slot in slots[len(values):]:        # widgets newer than the workflow keep their defaults (additive tail)
        if slot.kind == "value" and slot.spec.optional and slot.name not in out:
            default = _widget_default(slot.spec)
            if default is not None:
                out[slot.name] = default
    return out


def _is_additive_tail(slots: list[WidgetSlot], values) -> bool:
    """Fewer saved values than widgets, and every widget without a value belongs to an OPTIONAL input after all the
    saved ones: the frontend assigns widgets_values by position, so such new widgets simply keep their default."""
    if isinstance(values, dict) or len(values) >= len(slots):
        return False
    return all(slot.spec.optional for slot in slots[len(values):])


def _widget_default(spec: InputSpec):
    if "default" in spec.options:
        return spec.options["default"]
    if spec.type == "COMBO":
        return (spec.choices or [None])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec.type)


# --------------------------------------------------------------------------------------------- checks

def check_workflow(workflow: dict, object_info) -> list[str]:
    """Every reason the current node definitions would load this workflow wrongly; [] when it is sound.

    Checks: the UI-format keys; every node type exists (frontend-only nodes aside); the saved `inputs` and
    `outputs` match the definition (names, types, order of sockets); `widgets_values` has exactly the
    frontend's layout and every value fits its widget (type, range, combo choice); every link joins an existing
    output and input of the same type and agrees with both ends; `last_node_id`/`last_link_id` cover all ids.
    Additive changes of a definition pass: outputs after the saved ones, optional inputs the workflow lacks
    (a socket anywhere, widgets only after the saved values).
    """
    problems = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        if key not in workflow:
            problems.append(f"workflow: missing top-level key '{key}' (the frontend's Save always writes it)")
    nodes = _nodes(workflow)
    links = _links(workflow)
    if len(nodes) != len(workflow.get("nodes", [])):
        problems.append("workflow: two nodes share an id")
    if nodes and max(nodes) > workflow.get("last_node_id", 0):
        problems.append(f"workflow: last_node_id {workflow.get('last_node_id')} is below node id {max(nodes)}")
    if links and max(links) > workflow.get("last_link_id", 0):
        problems.append(f"workflow: last_link_id {workflow.get('last_link_id')} is below link id {max(links)}")

    for node in nodes.values():
        problems += _check_node(node, object_info, links)

    for lid, (a, a_slot, b, b_slot, typ) in links.items():
        where = f"link {lid} ({a}:{a_slot} -> {b}:{b_slot})"
        if a not in nodes or b not in nodes:
            problems.append(f"{where}: joins a node that does not exist")
            continue
        src, dst = nodes[a], nodes[b]
        outs = src.get("outputs") or []
        ins = dst.get("inputs") or []
        if a_slot >= len(outs) or lid not in (outs[a_slot].get("links") or []):
            problems.append(f"{where}: {_label(src)} output {a_slot} does not list this link")
        if b_slot >= len(ins) or ins[b_slot].get("link") != lid:
            problems.append(f"{where}: {_label(dst)} input {b_slot} does not hold this link")
            continue
        out_types = _output_types(src, object_info) or [o.get("type") for o in outs]   # virtual nodes: as saved
        out_type = out_types[a_slot] if a_slot < len(out_types) else typ
        in_type = ins[b_slot].get("type")
        if not _type_matches(out_type, in_type):
            problems.append(f"{where}: output type {out_type} of {_label(src)} does not fit input "
                            f"'{ins[b_slot].get('name')}' of type {in_type} of {_label(dst)}")
        if typ not in (None, "*") and not _type_matches(typ, out_type):
            problems.append(f"{where}: the link says type {typ}, its output is {out_type}")
    return problems


def _check_node(node: dict, object_info, links: dict) -> list[str]:
    label = _label(node)
    problems = []
    for key in ("id", "type", "pos", "size", "flags", "order", "mode", "properties"):
        if key not in node:
            problems.append(f"{label}: missing key '{key}'")
    if node["type"] in VIRTUAL_NODE_TYPES:
        return problems
    info = _lookup(object_info, node["type"])
    if info is None:
        return problems + [f"{label}: node type '{node['type']}' is not registered in this ComfyUI (missing pack "
                           f"or renamed node)"]
    # inputs: every saved entry names a current input of the same type; sockets in the frontend's order
    expected = expected_inputs(info)
    by_name = {name: (typ, is_widget) for name, typ, is_widget in expected}
    saved = node.get("inputs") or []
    for i, inp in enumerate(saved):
        name = inp.get("name")
        if name not in by_name:
            problems.append(f"{label}: input '{name}' does not exist any more; current inputs: "
                            f"{[n for n, _, _ in expected]}")
            continue
        typ, is_widget = by_name[name]
        if not _type_matches(inp.get("type"), typ):
            problems.append(f"{label}: input '{name}' is saved as type {inp.get('type')}, the node now takes {typ}")
        if bool(inp.get("widget")) != is_widget:
            problems.append(f"{label}: input '{name}' is saved as a {'widget' if inp.get('widget') else 'socket'} "
                            f"but is now a {'widget' if is_widget else 'socket'}")
        if inp.get("link") is not None and inp["link"] not in links:
            problems.append(f"{label}: input '{name}' refers to link {inp['link']} which does not exist")
    saved_names = [inp.get("name") for inp in saved]
    optional = {spec.name for spec in input_specs(info) if spec.optional}
    for name, typ, is_widget in expected:
        if not is_widget and name not in saved_names and name not in optional:   # a new optional socket is additive
            problems.append(f"{label}: the node now has an input '{name}' ({typ}) that the workflow does not have")
    sockets_expected = [n for n, _, w in expected if not w]
    sockets_saved = [n for n in saved_names if n in sockets_expected]
    if sockets_saved != [n for n in sockets_expected if n in sockets_saved]:
        problems.append(f"{label}: socket order {sockets_saved} differs from the definition's {sockets_expected}")
    for spec in input_specs(info):
        if not spec.optional and not spec.is_widget:
            entry = next((inp for inp in saved if inp.get("name") == spec.name), None)
            if entry is not None and entry.get("link") is None:
                problems.append(f"{label}: required input '{spec.name}' ({spec.type}) is not connected")
    # outputs: the saved ones must be the definition's first ones; outputs added after them are additive (the
    # frontend builds the slots from the definition and keeps the saved links by index), e.g. SaveImage and
    # PreviewImage gained an IMAGE output in ComfyUI 0.26
    out_types = _output_types(node, object_info)
    saved_out = node.get("outputs") or []
    if len(saved_out) > len(out_types):
        problems.append(f"{label}: {len(saved_out)} outputs saved, the node now has {len(out_types)} {out_types}")
    for i, (out, typ) in enumerate(zip(saved_out, out_types)):
        if out.get("type") != typ:
            problems.append(f"{label}: output {i} is saved as {out.get('type')}, the node now gives {typ}")
    # widgets
    slots = widget_slots(info)
    values = node.get("widgets_values")
    if slots and values is None:
        problems.append(f"{label}: no widgets_values, the node has widgets {[s.name for s in slots]}")
    elif values is not None:
        if len(values) != len(slots) and not _is_additive_tail(slots, values):
            problems.append(f"{label}: {len(values)} widgets_values saved, the frontend lays out {len(slots)}: "
                            f"{[s.name if s.kind == 'value' else s.name + ':' + s.kind for s in slots]}")
        for slot, value in zip(slots, values):
            why = widget_value_problem(slot, value)
            if why:
                problems.append(f"{label}: {why}")
    return problems


# --------------------------------------------------------------------------------------------- conversion

def _resolve_origin(nodes: dict, links: dict, link_id, infos, seen=None):
    """Follow a link back to the node that really produces the value, as graphToPrompt does.

    Returns ("link", node id, slot) | ("value", v) for a PrimitiveNode | None when the source is muted or gone.
    """
    seen = seen or set()
    if link_id is None or link_id not in links or link_id in seen:
        return None
    seen.add(link_id)
    a, a_slot, _b, _b_slot, typ = links[link_id]
    src = nodes.get(a)
    if src is None or src.get("mode", MODE_ALWAYS) == MODE_NEVER:
        return None
    if src["type"] == "Reroute":
        ins = src.get("inputs") or []
        return _resolve_origin(nodes, links, ins[0].get("link") if ins else None, infos, seen)
    if src["type"] == "PrimitiveNode":
        values = src.get("widgets_values") or []
        return ("value", values[0]) if values else None
    if src.get("mode", MODE_ALWAYS) == MODE_BYPASS:
        out_types = _output_types(src, infos) or [o.get("type") for o in src.get("outputs") or []]
        want = out_types[a_slot] if a_slot < len(out_types) else typ
        ins = src.get("inputs") or []
        candidates = ([a_slot] if a_slot < len(ins) else []) + list(range(len(ins)))
        for i in candidates:
            if ins[i].get("link") is not None and _type_matches(ins[i].get("type"), want):
                return _resolve_origin(nodes, links, ins[i]["link"], infos, seen)
        return None
    return ("link", a, a_slot)


def to_api_prompt(workflow: dict, object_info, check: bool = True) -> dict:
    """The API-format prompt the frontend would queue for this workflow: {id: {class_type, inputs, _meta}}.

    Raises WorkflowError when the workflow does not fit the current node definitions (see check_workflow);
    `check=False` converts anyway (to show what ComfyUI's own validation makes of a broken workflow).
    """
    problems = check_workflow(workflow, object_info) if check else []
    if problems:
        raise WorkflowError(problems)
    nodes = _nodes(workflow)
    links = _links(workflow)
    prompt = {}
    for node in sorted(nodes.values(), key=lambda n: n.get("order", 0)):
        if node["type"] in VIRTUAL_NODE_TYPES or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        info = _lookup(object_info, node["type"])
        inputs = dict(widget_values_by_name(node, info))
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            origin = _resolve_origin(nodes, links, inp["link"], object_info)
            if origin is None:
                if not inp.get("widget"):
                    inputs.pop(inp["name"], None)
                continue
            if origin[0] == "value":
                inputs[inp["name"]] = origin[1]
            else:
                inputs[inp["name"]] = [str(origin[1]), origin[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}
    for entry in prompt.values():        # links into nodes that were dropped (muted) disappear, as in the frontend
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] not in prompt:
                del entry["inputs"][name]
    return prompt

