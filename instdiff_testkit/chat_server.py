"""A real chat-completions HTTP server on 127.0.0.1 for tests: it replays scripted replies in order and records
every request (path, headers, JSON body). Ephemeral port, serves from a daemon thread, shuts itself down after
``lifetime`` seconds at the latest, so a failing test can never leave it running or reach outside the machine.

    with ChatServer([Reply.content('{"annos": []}'), Reply.error(500, "boom")]) as server:
        plan_layout(..., base_url=server.base_url)
        server.requests[0].body["model"]

Hostile servers for the planner's limits: ``Reply.redirect`` (a 30x to another address; a second ``ChatServer`` is
"another host": another port), ``Reply.trickle`` (a body sent a few bytes at a time), ``Reply.large`` (a body of
``piece * repeat`` bytes written piece by piece, with or without Content-Length). Each ``Request`` records how
many body bytes were sent before the client went away (``sent``). GET requests are recorded too (urllib turns a
redirected POST into a GET).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer: HTTP ``status``, a raw ``body`` (bytes/str) sent as is, after ``delay`` seconds;
    ``headers`` added; the body written in ``chunk``-byte pieces ``interval`` seconds apart (0: at once), sent
    ``repeat`` times, with a Content-Length header unless ``send_length`` is False (then it ends at close)."""
    status: int = 200
    body: str = ""
    delay: float = 0.0
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    chunk: int = 0
    interval: float = 0.0
    repeat: int = 1
    send_length: bool = True

    @classmethod
    def content(cls, text: str, delay: float = 0.0) -> "Reply":
        """A normal chat completion whose assistant message is ``text``."""
        payload = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "scripted",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text}}]}
        return cls(200, json.dumps(payload), delay)

    @classmethod
    def error(cls, status: int, message: str = "error") -> "Reply":
        """An OpenAI-style error body with the given HTTP status."""
        return cls(status, json.dumps({"error": {"message": message, "type": "test_error"}}))

    @classmethod
    def raw(cls, body: str, status: int = 200, content_type: str = "text/html") -> "Reply":
        """A body that is not a chat completion at all."""
        return cls(status, body, 0.0, content_type)

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> "Reply":
        """An HTTP redirect to ``location``."""
        return cls(status, "", 0.0, "text/plain", headers={"Location": location})

    @classmethod
    def trickle(cls, text: str, interval: float, chunk: int = 1) -> "Reply":
        """A chat completion of ``text`` whose body arrives ``chunk`` bytes every ``interval`` seconds."""
        reply = cls.content(text)
        reply.chunk, reply.interval = chunk, interval
        return reply

    @classmethod
    def large(cls, piece: str, repeat: int, send_length: bool = True) -> "Reply":
        """A body of ``piece`` written ``repeat`` times (never held whole), e.g. 100 MB without allocating it."""
        return cls(200, piece, 0.0, "application/json", repeat=repeat, send_length=send_length)


@dataclass
class Request:
    path: str
    headers: dict
    body: object
    method: str = "POST"
    sent: int = 0                 # body bytes written before the reply ended or the client went away


@dataclass
class ChatServer:
    replies: list
    lifetime: float = 30.0
    requests: list = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._queue = list(self.replies)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):        # keep pytest output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", errors="replace")
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                self._answer(body)

            def do_GET(self):
                self._answer(None)

            def _answer(self, body):
                record = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, self.command)
                with server._lock:
                    server.requests.append(record)
                    reply = server._queue.pop(0) if server._queue else Reply.error(
                        599, "chat_server: no scripted reply left")
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.send_length:
                        self.send_header("Content-Length", str(len(data) * reply.repeat))
                    else:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    step = reply.chunk or len(data) or 1
                    for _ in range(reply.repeat):
                        for i in range(0, len(data), step):
                            if server._stopped:
                                return
                            self.wfile.write(data[i:i + step])
                            self.wfile.flush()
                            record.sent += len(data[i:i + step])
                            if reply.interval:
                                time.sleep(reply.interval)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    pass                          # the client gave up (timeout and size-limit tests)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True

    def start(self) -> "ChatServer":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
