"""Layout planner: ask an OpenAI-compatible chat model for a layout, then repair and validate its answer.

Why a planner at all: writing 5-30 boxes by hand is slow, and LLMs are good at scene composition but sloppy with
the format (corner boxes although asked for ``[x, y, w, h]``, prose around the JSON, boxes over the edge, too
many objects). So the reply goes through the same loader as a layout file (``layout_io.load_layout``) and every
repair is reported instead of silently guessed.

Transport: the chat-completions endpoint (``POST {base_url}/chat/completions``) of OpenAI, llama.cpp's
``llama-server``, vLLM, Ollama, LM Studio..., spoken with ``urllib`` only. The API key is read from the
environment variable whose NAME is given, so a workflow file never contains it; it is sent only as the
``Authorization`` header and scrubbed from every message this module produces.

Caching: a reply is cached under a key built from every input that can change it (description, canvas, max
instances, endpoint, model, seed, temperature and the prompt version), in memory and optionally as one JSON file
per key in a directory, so re-running a workflow does not query the model again. Only replies that gave a valid
layout are cached; the raw reply is stored, so parser fixes apply to cached replies too.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..layout.types import Layout, LayoutError, MAX_INSTANCES
from ..layout.json_io import load_layout

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
PROMPT_VERSION = "1"
REPLY_EXCERPT_CHARS = 600
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SYSTEM_PROMPT = """\
You are a layout planner for a text-to-image model that places each object in its own box.
Given a scene description, a canvas size in pixels and a maximum number of objects, answer with ONE JSON object
and nothing else (no prose, no code fence), in exactly this format:
{"caption": "<one sentence describing the whole image, including the background and style>",
 "width": <canvas width>, "height": <canvas height>,
 "annos": [{"caption": "<the object with its attributes, e.g. a red vintage car>",
            "bbox": [x, y, w, h],
            "category_name": "<a short noun, e.g. car>"}]}
Rules:
- bbox is [x, y, w, h] in pixels: x, y = top-left corner (origin at the top-left of the canvas, y grows
  downward), w, h = width and height. Keep 0 <= x, 0 <= y, x + w <= width, y + h <= height.
- One entry per countable object; at most the given maximum; no entries for the background (sky, grass, road,
  walls): describe those in the global caption.
- Keep every object fully inside the canvas with a margin of about 8 pixels, unless the description asks for a
  cropped object. Do not put feet, wheels or heads exactly on the canvas edge.
- Respect perspective: objects standing on the ground have their bottom edge on the ground; objects further away
  have their bottom edge higher in the image and are drawn smaller. Objects on the same ground line keep their
  real size ratios (a person is about 3 times as tall as a dog, a bus about 2 times as tall as a person).
- No object smaller than 32 x 32 pixels; no two boxes for the same object; do not let boxes of different
  objects overlap almost completely.
"""


class PlannerError(RuntimeError):
    """The planner could not produce a layout; the message names the endpoint or field and the fix."""


class PlanReplyError(PlannerError):
    """The model answered, but nothing usable could be read from the reply (the message quotes an excerpt)."""


# --------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class PlanRequest:
    """Everything that determines the model's answer (and therefore the cache key)."""
    description: str
    width: int = 512
    height: int = 512
    max_instances: int = MAX_INSTANCES
    base_url: str = DEFAULT_BASE_URL
    model: str = ""
    seed: int = 0
    temperature: float = 0.0

    def cache_key(self) -> str:
        """SHA-256 over every input that can change the reply (not the key, not the timeout)."""
        payload = {"prompt_version": PROMPT_VERSION, "description": self.description, "width": self.width,
                   "height": self.height, "max_instances": self.max_instances,
                   "base_url": normalize_base_url(self.base_url), "model": self.model, "seed": self.seed,
                   "temperature": float(self.temperature)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def normalize_base_url(base_url: str) -> str:
    """``base_url`` without surrounding blanks and trailing slashes; a clear error when it is not http(s)."""
    url = (base_url or "").strip().rstrip("/")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise PlannerError(f"base_url: {base_url!r} is not an http(s) URL; use the server's OpenAI-compatible base, "
                           f"e.g. {DEFAULT_BASE_URL} (llama.cpp llama-server) or https://api.openai.com/v1")
    return url


def validate_request(req: PlanRequest) -> None:
    """Raise ``PlannerError`` naming the field for inputs the planner cannot use."""
    if not isinstance(req.description, str) or not req.description.strip():
        raise PlannerError("description: empty; describe the scene, e.g. 'a corgi and a cat on a sofa, cozy room'")
    for name in ("width", "height"):
        v = getattr(req, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise PlannerError(f"{name}: {v!r} is not a positive whole number of pixels; use e.g. 512")
    m = req.max_instances
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_INSTANCES:
        raise PlannerError(f"max_instances: {m!r} must be between 1 and {MAX_INSTANCES} (the model has "
                           f"{MAX_INSTANCES} instance slots)")
    if not isinstance(req.model, str):
        raise PlannerError(f"model: {req.model!r} is not text; give the model name the server expects")
    if isinstance(req.seed, bool) or not isinstance(req.seed, int):
        raise PlannerError(f"seed: {req.seed!r} is not a whole number")
    t = req.temperature
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 2.0:
        raise PlannerError(f"temperature: {t!r} must be between 0 and 2 (0 = most repeatable)")
    normalize_base_url(req.base_url)


def build_messages(req: PlanRequest) -> list[dict]:
    """The chat messages: the fixed system prompt and a user message with the description and limits."""
    user = (f"Scene description: {req.description.strip()}\n"
            f"Canvas: width {req.width}, height {req.height} pixels.\n"
            f"Maximum number of objects: {req.max_instances}.\n"
            f"Answer with the JSON layout only.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------- transport

def read_api_key(api_key_env: str) -> str | None:
    """The key from the environment variable named ``api_key_env`` (None when unset or empty, fine for local
    servers). The NAME is checked so a key pasted into the field is refused without being echoed."""
    name = (api_key_env or "").strip()
    if not name:
        return None
    if not _ENV_NAME.match(name) or len(name) > 128:
        raise PlannerError("api_key_env: this must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                           "not the key itself; the value given is not a valid variable name (not shown, in case "
                           "it is a key). Put the key into that variable before starting ComfyUI")
    value = os.environ.get(name, "").strip()
    return value or None


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _excerpt(text: str, limit: int = REPLY_EXCERPT_CHARS) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half} characters ...] {text[-half:]}"


def chat_completion(req: PlanRequest, api_key_env: str = DEFAULT_API_KEY_ENV, timeout: float = 120.0,
                    json_mode: bool = True) -> str:
    """POST the planner messages to ``{base_url}/chat/completions`` and return the reply text.

    ``json_mode`` asks for ``response_format: json_object``; servers that refuse that field (HTTP 400 naming it)
    are asked again without it. HTTP and network failures raise ``PlannerError`` naming the endpoint and the fix."""
    key = read_api_key(api_key_env)
    endpoint = normalize_base_url(req.base_url) + "/chat/completions"
    body: dict[str, Any] = {"model": req.model, "messages": build_messages(req),
                            "temperature": float(req.temperature), "seed": int(req.seed)}
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    try:
        status, text = _post(endpoint, body, key, timeout)
    except _HTTPFailure as e:
        if json_mode and e.status == 400 and "response_format" in e.body:
            return chat_completion(req, api_key_env, timeout, json_mode=False)
        raise PlannerError(_scrub(_http_failure_message(e, endpoint, api_key_env, key, req.model), key)) from None
    return _scrub(_reply_content(text, endpoint), key)


class _HTTPFailure(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(status)
        self.status, self.body = status, body


def _post(endpoint: str, body: dict, key: str | None, timeout: float) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(endpoint, data=json.dumps(body).encode("utf-8"), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        try:
            detail = e.read().decode("utf-8", errors="replace")
        except Exception:  # noqa: BLE001 - the status alone is still useful
            detail = ""
        raise _HTTPFailure(e.code, _scrub(detail, key)) from None
    except (socket.timeout, TimeoutError) as e:
        raise PlannerError(f"{endpoint}: no reply within {timeout:g} s (timeout); raise 'timeout', use a smaller or "
                           f"faster model, or check that the server is not busy") from e
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise PlannerError(f"{endpoint}: no connection within {timeout:g} s (timeout); check base_url and that "
                               f"the server is reachable") from None
        if isinstance(reason, ConnectionRefusedError):
            raise PlannerError(f"{endpoint}: connection refused; nothing listens there. Start the server (e.g. "
                               f"llama.cpp: llama-server -m model.gguf --port 8080) or fix base_url") from None
        if isinstance(reason, socket.gaierror):
            raise PlannerError(f"{endpoint}: host name not found ({reason}); fix base_url") from None
        raise PlannerError(f"{endpoint}: could not connect ({reason}); check base_url and the server") from None
    except (ConnectionError, OSError) as e:
        raise PlannerError(f"{endpoint}: connection failed ({type(e).__name__}: {e}); check the server and "
                           f"base_url") from None


def _http_failure_message(e: _HTTPFailure, endpoint: str, api_key_env: str, key: str | None, model: str) -> str:
    detail = f" Server said: {_excerpt(e.body, 300)}" if e.body.strip() else ""
    if e.status in (401, 403):
        sent = (f"the key from ${api_key_env} was rejected" if key else
                f"no key was sent because the environment variable {api_key_env or '(none)'} is not set")
        return (f"{endpoint}: HTTP {e.status} (not authorised): {sent}. Set {api_key_env or 'OPENAI_API_KEY'} to a "
                f"valid API key in the environment that starts ComfyUI (or set api_key_env to the variable that "
                f"holds it).{detail}")
    if e.status == 404:
        return (f"{endpoint}: HTTP 404 (not found): base_url must be the API base ending in /v1 (the planner "
                f"appends /chat/completions), and the model {model!r} must exist on the server.{detail}")
    if e.status == 429:
        return f"{endpoint}: HTTP 429 (rate limited or out of quota); wait and run again, or check your plan.{detail}"
    if e.status >= 500:
        return (f"{endpoint}: HTTP {e.status} (server error); the server failed on this request: check its log "
                f"(model loaded? context large enough?) and run again.{detail}")
    return f"{endpoint}: HTTP {e.status}; check base_url, model {model!r} and the server log.{detail}"


def _reply_content(text: str, endpoint: str) -> str:
    """The assistant message text of a chat-completions response body."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise PlannerError(f"{endpoint}: the response is not JSON, so this is not a chat-completions endpoint; "
                           f"check base_url (it should end in /v1). Response: {_excerpt(text, 300)!r}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        err = data.get("error") if isinstance(data, dict) else None
        why = f" The server reported: {_excerpt(json.dumps(err), 300)}" if err else ""
        raise PlannerError(f"{endpoint}: the response has no choices[0].message.content; is this an OpenAI "
                           f"chat-completions endpoint?{why} Response: {_excerpt(text, 300)!r}") from None
    if not isinstance(content, str) or not content.strip():
        raise PlanReplyError(f"{endpoint}: the model returned an empty message; try another seed or model")
    return content


# --------------------------------------------------------------------------------------------- reply parsing

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\r?\n?(.*?)```", re.S)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def extract_json(reply: str) -> tuple[Any, list[str]]:
    """The JSON value in a model reply and notes on how it was found: the whole reply, a ``` fence, or the first
    JSON object inside surrounding prose (a ``<think>`` block is removed first; trailing commas are tolerated).
    Raises ``PlanReplyError`` with an excerpt of the reply when there is none."""
    notes: list[str] = []
    text = reply.strip()
    if _THINK.search(text):
        text = _THINK.sub("", text).strip()
        notes.append("removed the model's <think> block")
    candidates: list[tuple[str, str]] = [(text, "")]
    for m in _FENCE.finditer(text):
        candidates.append((m.group(2).strip(), "read the JSON inside a ``` code fence"))
    for chunk, note in candidates:
        for fixed, fix_note in ((chunk, ""), (_TRAILING_COMMA.sub(r"\1", chunk), "removed trailing commas")):
            if fix_note and fixed == chunk:
                continue
            try:
                value = json.loads(fixed)
            except json.JSONDecodeError:
                continue
            notes += [n for n in (note, fix_note) if n]
            return value, notes
    # JSON embedded in prose: try every '{' / '[' until a decodable object with layout keys is found
    decoder = json.JSONDecoder()
    best = None
    for source, fix_note in ((text, ""), (_TRAILING_COMMA.sub(r"\1", text), "removed trailing commas")):
        for m in re.finditer(r"[{\[]", source):
            try:
                value, _ = decoder.raw_decode(source, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "annos" in value:
                notes += ["read the JSON object embedded in the model's prose"] + ([fix_note] if fix_note else [])
                return value, notes
            if best is None and isinstance(value, (dict, list)) and value:
                best = (value, fix_note)
        if best is not None:
            notes += ["read the JSON embedded in the model's prose"] + ([best[1]] if best[1] else [])
            return best[0], notes
    raise PlanReplyError(f"the model's reply contains no JSON layout; try another seed or a stronger model. "
                         f"Reply: {_excerpt(reply)!r}")


_BOX_KEYS = ("bbox", "box", "bounding_box")
_CAPTION_KEYS = ("caption", "description", "label", "name")
_LIST_KEYS = ("annos", "objects", "instances", "boxes", "annotations")


def _as_layout_dict(value: Any, req: PlanRequest, repairs: list[str]) -> dict:
    """Coerce the reply's JSON into the official layout dict shape, noting each change."""
    if isinstance(value, list):
        repairs.append("the reply is a bare list of objects; used it as 'annos'")
        value = {"annos": value}
    if not isinstance(value, dict):
        raise PlanReplyError(f"the reply's JSON is a {type(value).__name__}, not a layout object")
    data = dict(value)
    if "annos" not in data:
        for k in _LIST_KEYS[1:]:
            if isinstance(data.get(k), list):
                repairs.append(f"the object list was under {k!r}; used it as 'annos'")
                data["annos"] = data.pop(k)
                break
    if not isinstance(data.get("annos"), list):
        raise PlanReplyError("the reply's JSON has no 'annos' list of objects")
    annos = []
    for i, anno in enumerate(data["annos"]):
        if not isinstance(anno, dict):
            repairs.append(f"annos[{i}]: {anno!r:.60} is not an object; dropped")
            continue
        anno = dict(anno)
        if "bbox" not in anno:
            for k in _BOX_KEYS[1:]:
                if k in anno:
                    repairs.append(f"annos[{i}]: box given as {k!r}; used it as 'bbox'")
                    anno["bbox"] = anno.pop(k)
                    break
        box = anno.get("bbox")
        if isinstance(box, (list, tuple)) and box and all(isinstance(v, str) for v in box):
            try:
                anno["bbox"] = [float(v) for v in box]
                repairs.append(f"annos[{i}]: bbox numbers were strings; converted")
            except ValueError:
                pass
        if not (isinstance(anno.get("caption"), str) and anno["caption"].strip()):
            alt = next((anno[k] for k in _CAPTION_KEYS[1:] + ("category_name",)
                        if isinstance(anno.get(k), str) and anno[k].strip()), None)
            if alt is not None:
                repairs.append(f"annos[{i}]: no caption; used {alt!r:.40}")
                anno["caption"] = alt
        annos.append(anno)
    data["annos"] = annos
    for name in ("width", "height"):
        want = getattr(req, name)
        got = data.get(name)
        if got is None:
            data[name] = want
        elif not isinstance(got, (int, float)) or isinstance(got, bool) or got <= 0:
            repairs.append(f"{name} {got!r:.20} is not a size; used the requested {want}")
            data[name] = want
    if (data["width"], data["height"]) != (req.width, req.height):
        _rescale(data, req, repairs)
    caption = data.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        repairs.append("no global caption; used the description")
        data["caption"] = req.description.strip()
    return data


def _rescale(data: dict, req: PlanRequest, repairs: list[str]) -> None:
    """The model planned on another canvas: scale its boxes to the requested one (both box readings are linear)."""
    sx, sy = req.width / float(data["width"]), req.height / float(data["height"])
    repairs.append(f"the model planned on a {data['width']:g}x{data['height']:g} canvas; scaled the boxes to the "
                   f"requested {req.width}x{req.height}")
    for anno in data["annos"]:
        box = anno.get("bbox")
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
            anno["bbox"] = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
        for k in ("point",):
            p = anno.get(k)
            if isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p):
                anno[k] = [p[0] * sx, p[1] * sy]
        anno.pop("mask", None)
        anno.pop("scribble", None)
    data["width"], data["height"] = req.width, req.height


_ANNO_INDEX = re.compile(r"annos\[(\d+)\]")   # renames positions in messages shown to the user


def parse_layout_reply(reply: str, req: PlanRequest) -> tuple[Layout, str, list[str]]:
    """(layout, global caption, repairs) from a model reply, validated by the layout loader.

    Repairs, each reported: JSON found in a fence or in prose; list/keys coerced; boxes in ``[x1, y1, x2, y2]``
    detected by the loader's per-file ``auto`` reading; boxes clipped to the canvas; boxes without area dropped;
    an instance the loader rejects dropped (up to all of them); more than ``max_instances`` cut to the first
    ``max_instances``; a missing global caption filled from the description. Raises ``PlanReplyError`` with an
    excerpt of the reply when no valid instance is left."""
    value, notes = extract_json(reply)
    repairs = list(notes)
    try:
        data = _as_layout_dict(value, req, repairs)
    except PlanReplyError as e:
        raise PlanReplyError(f"{e}. Reply: {_excerpt(reply)!r}") from None
    annos = data["annos"]
    original_index = list(range(len(annos)))

    def in_reply_terms(text: str) -> str:          # loader messages count the annos passed; name the reply's
        return _ANNO_INDEX.sub(lambda m: f"annos[{original_index[int(m.group(1))]}]"
                               if int(m.group(1)) < len(original_index) else m.group(0), text)

    while True:
        try:
            loaded = load_layout({**data, "annos": annos}, bbox_format="auto", truncate=True)
            break
        except LayoutError as e:
            if e.index is None or not 0 <= e.index < len(annos):
                raise PlanReplyError(f"the model's layout is invalid: {e}. Reply: {_excerpt(reply)!r}") from None
            k = e.index
            repairs.append(f"dropped an object the loader rejected: {in_reply_terms(str(e))}")
            annos = annos[:k] + annos[k + 1:]
            original_index = original_index[:k] + original_index[k + 1:]
    repairs += [in_reply_terms(w) for w in loaded.warnings]
    layout = loaded.layout
    if not layout.instances:
        raise PlanReplyError(f"the model's layout has no usable object (every box was empty, off the canvas or "
                             f"invalid); try another seed or model. Repairs tried: {'; '.join(repairs)}. "
                             f"Reply: {_excerpt(reply)!r}")
    if len(layout.instances) > req.max_instances:
        n = len(layout.instances)
        repairs.append(f"{n} usable objects but max_instances is {req.max_instances}; kept the first "
                       f"{req.max_instances}, dropped {n - req.max_instances}")
        layout = Layout(layout.width, layout.height, layout.caption, layout.instances[:req.max_instances])
    return layout, loaded.caption, repairs


# --------------------------------------------------------------------------------------------- cache

class PlanCache:
    """Replies by cache key: an in-memory LRU (``max_entries``) and, optionally, one JSON file per key in
    ``directory`` (survives restarts). Thread-safe; file writes are atomic."""

    def __init__(self, directory: str | os.PathLike | None = None, max_entries: int = 128):
        self.directory = os.fspath(directory) if directory is not None else None
        self.max_entries = max_entries
        self._memory: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def _path(self, key: str, directory: str) -> str:
        return os.path.join(directory, f"plan-{key}.json")

    def get(self, key: str, directory: str | None = None) -> tuple[str | None, str]:
        """(reply, where: "memory" / "disk" / "") for ``key``."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key], "memory"
        directory = directory or self.directory
        if directory:
            path = self._path(key, directory)
            try:
                with open(path, encoding="utf-8") as f:
                    entry = json.load(f)
                reply = entry["reply"]
                if isinstance(reply, str) and entry.get("key") == key:
                    self._remember(key, reply)
                    return reply, "disk"
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return None, ""

    def put(self, key: str, reply: str, req: PlanRequest | None = None, directory: str | None = None) -> None:
        self._remember(key, reply)
        directory = directory or self.directory
        if not directory:
            return
        os.makedirs(directory, exist_ok=True)
        entry = {"key": key, "reply": reply}
        if req is not None:
            entry["inputs"] = {"description": req.description, "width": req.width, "height": req.height,
                               "max_instances": req.max_instances, "base_url": req.base_url, "model": req.model,
                               "seed": req.seed, "temperature": req.temperature}
        fd, tmp = tempfile.mkstemp(prefix=".plan-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self._path(key, directory))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def _remember(self, key: str, reply: str) -> None:
        with self._lock:
            self._memory[key] = reply
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def clear(self) -> None:
        """Forget the in-memory entries (files stay)."""
        with self._lock:
            self._memory.clear()


DEFAULT_CACHE = PlanCache()


# --------------------------------------------------------------------------------------------- the planner

@dataclass(frozen=True)
class PlanResult:
    """A planned layout, its global caption, every repair made, where the reply came from ("model", "memory
    cache", "disk cache"), the raw reply and the cache key."""
    layout: Layout
    caption: str
    repairs: list[str] = field(default_factory=list)
    source: str = "model"
    reply: str = ""
    cache_key: str = ""

    def report(self) -> str:
        """A short text for people: where the layout came from, what was repaired."""
        lines = [f"planned {len(self.layout.instances)} instances on {self.layout.width}x{self.layout.height} "
                 f"(reply from {self.source})"]
        if self.repairs:
            lines.append(f"repairs and decisions ({len(self.repairs)}):")
            lines += [f"- {r}" for r in self.repairs]
        else:
            lines.append("repairs: none")
        return "\n".join(lines)


def plan_layout(description: str, width: int = 512, height: int = 512, max_instances: int = MAX_INSTANCES, *,
                base_url: str = DEFAULT_BASE_URL, model: str = "", api_key_env: str = DEFAULT_API_KEY_ENV,
                timeout: float = 120.0, seed: int = 0, temperature: float = 0.0,
                cache: PlanCache | None = None, cache_dir: str | os.PathLike | None = None) -> PlanResult:
    """Plan a layout for ``description`` on a ``width`` x ``height`` canvas with an OpenAI-compatible chat model.

    A cached reply for the same inputs is reused (``cache``: default the module-wide ``DEFAULT_CACHE``;
    ``cache_dir``: also keep replies as JSON files there). Raises ``PlannerError`` for bad inputs and HTTP or
    network failures, ``PlanReplyError`` when the reply holds no usable layout."""
    req = PlanRequest(description=description, width=width, height=height, max_instances=max_instances,
                      base_url=base_url, model=model, seed=seed, temperature=temperature)
    validate_request(req)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise PlannerError(f"timeout: {timeout!r} must be a positive number of seconds")
    cache = DEFAULT_CACHE if cache is None else cache
    directory = os.fspath(cache_dir) if cache_dir is not None else None
    key = req.cache_key()
    reply, where = cache.get(key, directory)
    if reply is not None:
        try:
            layout, caption, repairs = parse_layout_reply(reply, req)
            return PlanResult(layout, caption, repairs, f"{where} cache", reply, key)
        except PlannerError:
            pass                                     # a stale entry the current parser rejects: ask again
    reply = chat_completion(req, api_key_env=api_key_env, timeout=float(timeout))
    layout, caption, repairs = parse_layout_reply(reply, req)
    cache.put(key, reply, req, directory)
    return PlanResult(layout, caption, repairs, "model", reply, key)
