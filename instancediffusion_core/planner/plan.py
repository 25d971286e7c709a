"""Layout planner: ask an OpenAI-compatible chat model for a layout, then repair and validate its answer.

Why a planner at all: writing 5-30 boxes by hand is slow, and LLMs are good at scene composition but sloppy with
the format (corner boxes although asked for ``[x, y, w, h]``, prose around the JSON, boxes over the edge, too
many objects). So the reply goes through the same loader as a layout file (``layout_io.load_layout``) and every
repair is reported instead of silently guessed.

Transport: the chat-completions endpoint (``POST {base_url}/chat/completions``) of OpenAI, llama.cpp's
``llama-server``, vLLM, Ollama, LM Studio..., spoken with ``urllib`` only. The API key is read from the
environment variable whose NAME is given, so a workflow file never contains it; it is sent only as the
``Authorization`` header and scrubbed from every message this module produces (before anything is excerpted).
Redirects are never followed: urllib would resend the header to the new host, and a redirected POST becomes a
GET that no chat endpoint answers anyway. ``timeout`` bounds the whole call (connecting, waiting, reading the
reply), not each socket read: a watchdog closes the connection at the deadline. A reply is at most
``MAX_REPLY_BYTES``, read in small chunks.

Parsing is linear in the reply's size (a reply is untrusted text: a regex with a lazy ``.*?`` per ``<think>`` or
code fence is quadratic when the closing tag is missing), and the repair is one pass: every instance is validated
once and the invalid ones are dropped together.

Caching: a reply is cached under a key built from every input that can change it (description, canvas, max
instances, endpoint, model, seed, temperature and the prompt version), in memory and optionally as one JSON file
per key in a directory, so re-running a workflow does not query the model again. Only replies that gave a valid
layout are cached; the raw reply is stored, so parser fixes apply to cached replies too.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..layout.types import Layout, LayoutError, MAX_CANVAS, MAX_INSTANCES
from ..layout.json_io import JSON_DECODER, bounded_repr, load_layout

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
PROMPT_VERSION = "1"
REPLY_EXCERPT_CHARS = 600
# A chat completion carrying a layout is a few KB (tens with a reasoning model's thoughts); 2 MiB is far beyond
# any real reply and bounds the memory and the parsing time of a hostile one.
MAX_REPLY_BYTES = 2 << 20
MAX_ERROR_BODY_BYTES = 64 << 10       # an HTTP error's body: only excerpted
_READ_CHUNK = 64 << 10
MAX_REPAIR_NOTES = 20                 # dropped objects reported one by one; the rest are counted
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
            raise PlannerError(f"{name}: {bounded_repr(v, 40)} is not a positive whole number of pixels; use e.g. 512")
        if v > MAX_CANVAS:
            raise PlannerError(f"{name}: {v} px is larger than {MAX_CANVAS} px per side (MAX_CANVAS: layouts are "
                               f"relative to the canvas, and masks and previews cost memory per pixel); plan at the "
                               f"image size, e.g. 512 or 768")
    m = req.max_instances
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_INSTANCES:
        raise PlannerError(f"max_instances: {bounded_repr(m, 40)} must be between 1 and {MAX_INSTANCES} (the model "
                           f"has {MAX_INSTANCES} instance slots)")
    if not isinstance(req.model, str):
        raise PlannerError(f"model: {bounded_repr(req.model, 40)} is not text; give the model name the server "
                           f"expects")
    if isinstance(req.seed, bool) or not isinstance(req.seed, int) or not -2 ** 63 <= req.seed < 2 ** 63:
        raise PlannerError(f"seed: {bounded_repr(req.seed, 40)} is not a whole number that fits 64 bits")
    t = req.temperature
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 2.0:
        raise PlannerError(f"temperature: {bounded_repr(t, 40)} must be a number between 0 and 2 (0 = most "
                           f"repeatable; NaN and infinity are not allowed)")
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
    if not secret:
        return text
    for form in {secret, urllib.parse.quote(secret, safe=""), json.dumps(secret)[1:-1]}:
        text = text.replace(form, "***")
    return text


def _scrubbed_body(text: str, key: str | None) -> str:
    """A response body as it may be quoted: JSON is re-serialised first (a server could hide the key behind
    ``\\u`` escapes), then every form of the key is replaced. Linear in the body's size."""
    if key:
        try:
            text = json.dumps(JSON_DECODER.decode(text), ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
    return _scrub(text, key)


def _excerpt(text: str, limit: int = REPLY_EXCERPT_CHARS) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half} characters ...] {text[-half:]}"


def _check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise PlannerError(f"timeout: {bounded_repr(timeout, 40)} must be a positive, finite number of seconds "
                           f"(the most the whole request may take), e.g. 120")
    return float(timeout)


def chat_completion(req: PlanRequest, api_key_env: str = DEFAULT_API_KEY_ENV, timeout: float = 120.0,
                    json_mode: bool = True) -> str:
    """POST the planner messages to ``{base_url}/chat/completions`` and return the reply text.

    ``json_mode`` asks for ``response_format: json_object``; servers that refuse that field (HTTP 400 naming it)
    are asked again without it, within the same deadline. HTTP and network failures raise ``PlannerError`` naming
    the endpoint and the fix; no message ever contains the API key."""
    deadline = _Deadline(_check_timeout(timeout))
    key = read_api_key(api_key_env)
    try:
        return _scrub(_chat(req, api_key_env, key, deadline, json_mode), key)
    except PlannerError as e:
        raise type(e)(_scrub(str(e), key)) from None


def _chat(req: PlanRequest, api_key_env: str, key: str | None, deadline: "_Deadline", json_mode: bool) -> str:
    endpoint = normalize_base_url(req.base_url) + "/chat/completions"
    body: dict[str, Any] = {"model": req.model, "messages": build_messages(req),
                            "temperature": float(req.temperature), "seed": int(req.seed)}
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    try:
        status, text = _post(endpoint, body, key, deadline)
    except _HTTPFailure as e:
        if json_mode and e.status == 400 and "response_format" in e.body:
            return _chat(req, api_key_env, key, deadline, json_mode=False)
        raise PlannerError(_http_failure_message(e, endpoint, api_key_env, key, req.model)) from None
    return _reply_content(text, endpoint, key)


class _HTTPFailure(Exception):
    def __init__(self, status: int, body: str, location: str = ""):
        super().__init__(status)
        self.status, self.body, self.location = status, body, location


class _Deadline:
    """The end of one planner call: the time left for each blocking step, and a watchdog that shuts the call's
    sockets down at the end (a socket timeout bounds one read only; a server trickling one byte a second, or its
    headers, would keep the call alive for ever)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def left(self) -> float:
        return self.end - time.monotonic()

    def watch(self, sock) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def __enter__(self) -> "_Deadline":
        self._timer = threading.Timer(max(self.left(), 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._sockets.clear()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock) -> None:
    try:      # the plain socket's shutdown (an SSLSocket's own would also drop its SSL object under the reader)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are reported, never followed (urllib would resend Authorization to whatever host they name)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None                                  # -> HTTPError(code), handled as a failure


def _watched(connection_class, deadline: _Deadline):
    class Watched(connection_class):
        def connect(self):
            super().connect()
            deadline.watch(self.sock)
    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), req, context=self._context)


def _timeout_error(endpoint: str, deadline: _Deadline) -> PlannerError:
    return PlannerError(f"{endpoint}: no complete reply within {deadline.seconds:g} s (timeout; it bounds the whole "
                        f"request: connecting, waiting and reading the reply); raise 'timeout', use a smaller or "
                        f"faster model, or check that the server is not busy")


def _read_limited(response, limit: int, deadline: _Deadline, endpoint: str, what: str, strict: bool = True) -> bytes:
    """The body in chunks of at most ``_READ_CHUNK``, checking the deadline between reads and the size as it
    grows; ``strict=False`` (error bodies) cuts at ``limit`` instead of failing."""
    length = response.headers.get("Content-Length") if getattr(response, "headers", None) is not None else None
    if strict and length and length.strip().isdigit() and int(length) > limit:
        raise PlannerError(f"{endpoint}: the {what} is {int(length):,} bytes, more than the {limit:,}-byte limit "
                           f"(MAX_REPLY_BYTES; a layout reply is a few KB). Check that base_url is an "
                           f"OpenAI-compatible chat-completions API")
    read = getattr(response, "read1", None) or response.read
    chunks, total = [], 0
    while True:
        if deadline.expired or deadline.left() <= 0:
            raise _timeout_error(endpoint, deadline)
        chunk = read(_READ_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            if not strict:
                chunks.append(chunk[:len(chunk) - (total - limit)])
                break
            raise PlannerError(f"{endpoint}: the {what} is larger than the {limit:,}-byte limit (MAX_REPLY_BYTES; "
                               f"a layout reply is a few KB); stopped reading. Check that base_url is an "
                               f"OpenAI-compatible chat-completions API")
        chunks.append(chunk)
    if deadline.expired:                             # the watchdog closed the socket: not the end of the body
        raise _timeout_error(endpoint, deadline)
    if strict and getattr(response, "length", None):
        raise PlannerError(f"{endpoint}: the connection closed {response.length:,} bytes before the end of the "
                           f"{what}; check the server and run again")
    return b"".join(chunks)


def _post(endpoint: str, body: dict, key: str | None, deadline: _Deadline) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(endpoint, data=json.dumps(body).encode("utf-8"), headers=headers,
                                     method="POST")
    opener = urllib.request.build_opener(_RefuseRedirects, _HTTPHandler(deadline), _HTTPSHandler(deadline))
    with deadline:
        try:
            with opener.open(request, timeout=max(min(deadline.seconds, deadline.left()), 0.001)) as response:
                data = _read_limited(response, MAX_REPLY_BYTES, deadline, endpoint, "reply")
                return response.status, data.decode("utf-8", errors="replace")
        except PlannerError:
            raise
        except urllib.error.HTTPError as e:
            try:
                detail = _read_limited(e, MAX_ERROR_BODY_BYTES, deadline, endpoint, "error body", strict=False)
                detail = detail.decode("utf-8", errors="replace")
            except Exception:  # noqa: BLE001 - the status alone is still useful
                detail = ""
            location = (e.headers.get("Location") or "") if e.headers is not None else ""
            raise _HTTPFailure(e.code, _scrubbed_body(detail, key), _scrub(location[:300], key)) from None
        except (socket.timeout, TimeoutError):
            raise _timeout_error(endpoint, deadline) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if deadline.expired or isinstance(reason, (socket.timeout, TimeoutError)):
                raise _timeout_error(endpoint, deadline) from None
            if isinstance(reason, ConnectionRefusedError):
                raise PlannerError(f"{endpoint}: connection refused; nothing listens there. Start the server (e.g. "
                                   f"llama.cpp: llama-server -m model.gguf --port 8080) or fix base_url") from None
            if isinstance(reason, socket.gaierror):
                raise PlannerError(f"{endpoint}: host name not found ({reason}); fix base_url") from None
            raise PlannerError(f"{endpoint}: could not connect ({reason}); check base_url and the server") from None
        except (ConnectionError, OSError, http.client.HTTPException) as e:
            if deadline.expired:
                raise _timeout_error(endpoint, deadline) from None
            raise PlannerError(f"{endpoint}: connection failed ({type(e).__name__}: {bounded_repr(str(e), 200)}); "
                               f"check the server and base_url") from None


def _http_failure_message(e: _HTTPFailure, endpoint: str, api_key_env: str, key: str | None, model: str) -> str:
    detail = f" Server said: {_excerpt(e.body, 300)}" if e.body.strip() else ""
    if 300 <= e.status < 400:
        where = f" to {e.location!r}" if e.location else ""
        return (f"{endpoint}: HTTP {e.status} redirect{where}; redirects are not followed (the API key must never "
                f"go to another address, and a redirected POST cannot reach a chat endpoint). Set base_url to the "
                f"final address of the API (e.g. https:// instead of http://, or the path ending in /v1).")
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


def _reply_content(text: str, endpoint: str, key: str | None = None) -> str:
    """The assistant message text of a chat-completions response body; every excerpt of the body is scrubbed of
    the key before it is cut (a cut could leave half a key that no scrub recognises)."""
    try:
        data = JSON_DECODER.decode(text)
    except (ValueError, RecursionError):
        raise PlannerError(f"{endpoint}: the response is not JSON, so this is not a chat-completions endpoint; "
                           f"check base_url (it should end in /v1). Response: "
                           f"{_excerpt(_scrub(text, key), 300)!r}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        err = data.get("error") if isinstance(data, dict) else None
        try:
            why = f" The server reported: {_excerpt(_scrub(json.dumps(err), key), 300)}" if err else ""
        except (ValueError, RecursionError):
            why = ""
        raise PlannerError(f"{endpoint}: the response has no choices[0].message.content; is this an OpenAI "
                           f"chat-completions endpoint?{why} Response: "
                           f"{_excerpt(_scrubbed_body(text, key), 300)!r}") from None
    if not isinstance(content, str) or not content.strip():
        raise PlanReplyError(f"{endpoint}: the model returned an empty message; try another seed or model")
    return content


# --------------------------------------------------------------------------------------------- reply parsing

_TRAILING_COMMA = re.compile(r",(\s*[}\]])")          # linear: each comma scans only the blanks after it
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")   # keeps every index
_IDENT = re.compile(r"[ \t]*[A-Za-z0-9_-]*[ \t]*\r?\n?")
_OPEN = re.compile(r"[{\[]")
_IN_VALUE = re.compile(r'["{}\[\]]')
_IN_STRING = re.compile(r'["\\\n]')
_PAIR = {"}": "{", "]": "["}
_RAW_DECODE_TRIES = 128               # each try is linear, so a fixed number of them keeps extraction linear


def _strip_think(text: str) -> tuple[str, bool]:
    """``text`` without its ``<think>...</think>`` blocks (tags in any case; an unclosed block stays), by
    ``str.find``: linear, where the regex ``<think>.*?</think>`` rescans to the end for every unclosed tag."""
    low = text.translate(_ASCII_LOWER)
    parts, pos, removed = [], 0, False
    while True:
        i = low.find("<think>", pos)
        if i < 0:
            break
        j = low.find("</think>", i + 7)
        if j < 0:
            break
        parts.append(text[pos:i])
        pos, removed = j + 8, True
    parts.append(text[pos:])
    return "".join(parts), removed


def _fence_bodies(text: str) -> list[str]:
    """The contents of ```...``` code fences (an optional language word after the opening fence), linear."""
    bodies, pos = [], 0
    while True:
        a = text.find("```", pos)
        if a < 0:
            return bodies
        b = text.find("```", a + 3)
        if b < 0:
            return bodies
        head = _IDENT.match(text, a + 3, b)
        bodies.append(text[head.end():b].strip())
        pos = b + 3


def _balanced_spans(text: str) -> list[tuple[tuple[int, int] | None, list[tuple[int, int]]]]:
    """Top-level ``{...}`` / ``[...]`` spans of ``text`` (brackets inside JSON strings ignored, quotes in the prose
    around them too) and, for each, the spans of its direct children; one pass, linear. A top-level span that
    never closes, or closes with the wrong bracket, is ``None`` but keeps the children that did close."""
    out: list = []
    pos, n = 0, len(text)
    while True:
        m = _OPEN.search(text, pos)
        if m is None:
            return out
        start, stack, children, child_start = m.start(), [m.group()], [], None
        pos, broken = m.end(), False
        while stack:
            m = _IN_VALUE.search(text, pos)
            if m is None:
                broken, pos = True, n
                break
            c, pos = m.group(), m.end()
            if c == '"':
                while True:
                    e = _IN_STRING.search(text, pos)
                    if e is None or e.group() == "\n":
                        broken = True
                        break
                    pos = e.end() + (1 if e.group() == "\\" else 0)
                    if e.group() == '"':
                        break
                if broken:
                    pos = e.end() if e is not None else n
                    break
            elif c in "{[":
                if len(stack) == 1:
                    child_start = m.start()
                stack.append(c)
            else:
                if stack[-1] != _PAIR[c]:
                    broken = True
                    break
                stack.pop()
                if len(stack) == 1 and child_start is not None:
                    children.append((child_start, pos))
                    child_start = None
        out.append((None if broken else (start, pos), children))


def _decode(chunk: str) -> tuple[Any, str] | None:
    """(value, repair note) of a JSON chunk, trying it as is and without trailing commas; None if neither."""
    for fixed, note in ((chunk, ""), (None, "removed trailing commas")):
        if fixed is None:
            fixed = _TRAILING_COMMA.sub(r"\1", chunk)
            if fixed == chunk:
                break
        try:
            return JSON_DECODER.decode(fixed), note
        except (ValueError, RecursionError):
            continue
    return None


def _is_layout(value: Any) -> bool:
    return isinstance(value, dict) and "annos" in value


def extract_json(reply: str) -> tuple[Any, list[str]]:
    """The JSON value in a model reply and notes on how it was found: the whole reply, a ``` fence, or the first
    JSON object in surrounding prose (a ``<think>`` block is removed first; trailing commas are tolerated).
    Linear in the reply's length. Raises ``PlanReplyError`` with an excerpt of the reply when there is none."""
    notes: list[str] = []
    text, removed = _strip_think(reply.strip())
    text = text.strip()
    if removed:
        notes.append("removed the model's <think> block")
    for chunk, note in [(text, "")] + [(b, "read the JSON inside a ``` code fence") for b in _fence_bodies(text)]:
        found = _decode(chunk)
        if found is not None:
            notes += [n for n in (note, found[1]) if n]
            return found[0], notes
    # JSON embedded in prose: each top-level bracket span once (and the direct children of one that does not
    # decode); the first object with layout keys wins, else the first non-empty JSON value
    best = None
    for span, children in _balanced_spans(text):
        found = _decode(text[span[0]:span[1]]) if span is not None else None
        candidates = [found] if found is not None else [_decode(text[a:b]) for a, b in children]
        if found is not None and isinstance(found[0], (dict, list)):
            inner = found[0].values() if isinstance(found[0], dict) else found[0]
            candidates += [(v, found[1]) for v in inner if _is_layout(v)][:1]
        for cand in candidates:
            if cand is None:
                continue
            value, fix_note = cand
            if _is_layout(value):
                notes += ["read the JSON object embedded in the model's prose"] + ([fix_note] if fix_note else [])
                return value, notes
            if best is None and isinstance(value, (dict, list)) and value:
                best = cand
    if best is None:                  # prose the span scan misreads (a stray quote): a bounded number of tries,
        starts = [m.start() for m in _OPEN.finditer(text)]         # the first openers and the last ones (a
        if len(starts) > 2 * _RAW_DECODE_TRIES:                    # reply usually ends with its JSON)
            starts = starts[:_RAW_DECODE_TRIES] + starts[-_RAW_DECODE_TRIES:]
        for start in starts:
            try:
                value, _ = JSON_DECODER.raw_decode(text, start)
            except (ValueError, RecursionError):
                continue
            if _is_layout(value):
                notes.append("read the JSON object embedded in the model's prose")
                return value, notes
            if best is None and isinstance(value, (dict, list)) and value:
                best = (value, "")
    if best is not None:
        notes += ["read the JSON embedded in the model's prose"] + ([best[1]] if best[1] else [])
        return best[0], notes
    raise PlanReplyError(f"the model's reply contains no JSON layout; try another seed or a stronger model. "
                         f"Reply: {_excerpt(reply)!r}")


_BOX_KEYS = ("bbox", "box", "bounding_box")
_CAPTION_KEYS = ("caption", "description", "label", "name")
_LIST_KEYS = ("annos", "objects", "instances", "boxes", "annotations")


def _as_layout_dict(value: Any, req: PlanRequest, repairs: list[str], positions: list[int] | None = None) -> dict:
    """Coerce the reply's JSON into the official layout dict shape, noting each change. ``positions`` receives the
    reply's index of every instance kept in ``annos`` (entries that are not objects are dropped here)."""
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
    not_objects = 0
    for i, anno in enumerate(data["annos"]):
        if not isinstance(anno, dict):
            not_objects += 1
            if not_objects <= MAX_REPAIR_NOTES:
                repairs.append(f"annos[{i}]: {bounded_repr(anno, 60)} is not an object; dropped")
            continue
        if positions is not None:
            positions.append(i)
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
                repairs.append(f"annos[{i}]: no caption; used {bounded_repr(alt, 40)}")
                anno["caption"] = alt
        annos.append(anno)
    if not_objects > MAX_REPAIR_NOTES:
        repairs.append(f"... and {not_objects - MAX_REPAIR_NOTES} more entries that are not objects; dropped")
    data["annos"] = annos
    for name in ("width", "height"):
        want = getattr(req, name)
        got = data.get(name)
        if got is None:
            data[name] = want
        elif not _positive_size(got):
            repairs.append(f"{name} {bounded_repr(got, 20)} is not a size; used the requested {want}")
            data[name] = want
    if (data["width"], data["height"]) != (req.width, req.height):
        _rescale(data, req, repairs)
    caption = data.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        repairs.append("no global caption; used the description")
        data["caption"] = req.description.strip()
    return data


def _positive_size(v: Any) -> bool:
    """A finite positive number of at most 1e9 (the reply's canvas; ints of any length would overflow a float)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return 0 < v <= 10 ** 9
    return math.isfinite(v) and 0 < v <= 1e9


def _rescale(data: dict, req: PlanRequest, repairs: list[str]) -> None:
    """The model planned on another canvas: scale its boxes to the requested one (both box readings are linear)."""
    sx, sy = req.width / float(data["width"]), req.height / float(data["height"])
    repairs.append(f"the model planned on a {data['width']:g}x{data['height']:g} canvas; scaled the boxes to the "
                   f"requested {req.width}x{req.height}")
    for anno in data["annos"]:
        box = anno.get("bbox")
        if isinstance(box, list) and len(box) == 4 and all(_scalable(v) for v in box):
            anno["bbox"] = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
        for k in ("point",):
            p = anno.get(k)
            if isinstance(p, list) and len(p) == 2 and all(_scalable(v) for v in p):
                anno[k] = [p[0] * sx, p[1] * sy]
        anno.pop("mask", None)
        anno.pop("scribble", None)
    data["width"], data["height"] = req.width, req.height


def _scalable(v: Any) -> bool:
    return not isinstance(v, bool) and (isinstance(v, float) or (isinstance(v, int) and v.bit_length() <= 1023))


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
    original_index: list[int] = []
    try:
        data = _as_layout_dict(value, req, repairs, original_index)
    except PlanReplyError as e:
        raise PlanReplyError(f"{e}. Reply: {_excerpt(reply)!r}") from None

    def in_reply_terms(text: str) -> str:          # loader messages count the annos passed; name the reply's
        return _ANNO_INDEX.sub(lambda m: f"annos[{original_index[int(m.group(1))]}]"
                               if int(m.group(1)) < len(original_index) else m.group(0), text)

    try:                                           # one pass: every instance validated once, the invalid dropped
        loaded = load_layout(data, bbox_format="auto", truncate=True, drop_invalid=True, name="layout")
    except LayoutError as e:
        raise PlanReplyError(f"the model's layout is invalid: {in_reply_terms(str(e))}. "
                             f"Reply: {_excerpt(reply)!r}") from None
    for k, e in enumerate(loaded.dropped):
        if k == MAX_REPAIR_NOTES:
            repairs.append(f"... and {len(loaded.dropped) - MAX_REPAIR_NOTES} more objects the loader rejected; "
                           f"dropped")
            break
        repairs.append(f"dropped an object the loader rejected: {in_reply_terms(str(e))}")
    shown = loaded.warnings if len(loaded.warnings) <= 2 * MAX_REPAIR_NOTES else \
        loaded.warnings[:2 * MAX_REPAIR_NOTES] + [f"... and {len(loaded.warnings) - 2 * MAX_REPAIR_NOTES} more notes "
                                                  f"from the loader"]
    repairs += [in_reply_terms(w) for w in shown]
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
    _check_timeout(timeout)
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
