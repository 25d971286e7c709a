"""A real chat-completions HTTP server on 127.0.0.1 for tests: it replays scripted replies in order and records
every request (path, headers, JSON body). Ephemeral port, serves from a daemon thread, shuts itself down after
``lifetime`` seconds at the latest, so a failing test can never leave it running or reach outside the machine.

    with ChatServer([Reply.content('{"annos": []}'), Reply.error(500, "boom")]) as server:
        plan_layout(..., base_url=server.base_url)
        server.requests[0].body["model"]
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
    """One scripted answer: HTTP ``status``, a raw ``body`` (bytes/str) sent as is, after ``delay`` seconds."""
    status: int = 200
    body: str = ""
    delay: float = 0.0
    content_type: str = "application/json"

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


@dataclass
class Request:
    path: str
    headers: dict
    body: object


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
                with server._lock:
                    server.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                   body))
                    reply = server._queue.pop(0) if server._queue else Reply.error(
                        599, "chat_server: no scripted reply left")
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass                          # the client gave up (timeout test)

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
