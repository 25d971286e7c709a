"""The real ComfyUI server (its main.py) on a free loopback port, with this repo linked in as a custom node pack.

Everything it writes (models, output, temp, input, user folders, the custom_nodes link) goes into a temporary base
folder (`--base-directory`), so packs that create their model folders (ours: models/instance_diffusion) never write
into the host tree; the database is in memory. Optional packages that ComfyUI's core imports at module level for a
few models only (torchvision, torchaudio) are stubbed the same way as the in-process host tests do
(instdiff_testkit/comfy_harness.py), so the server starts in a venv without them. The frontend is the one installed
in the venv (`comfyui_frontend_package`) unless `frontend_root` names another build's static folder.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PACK_DIR_NAME = "comfyui-instdiff"

_LAUNCHER = """
import runpy, sys
host, packages = sys.argv[1], sys.argv[2]
from instdiff_testkit import comfy_harness
comfy_harness.install_missing_module_stubs()
if packages:
    sys.path.insert(0, packages)
sys.path.insert(0, host)
sys.argv = [host + "/main.py"] + sys.argv[3:]
runpy.run_path(host + "/main.py", run_name="__main__")
"""
FRONTEND_PACKAGES_ENV = "COMFYUI_FRONTEND_PACKAGES"


def is_comfyui_root(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "main.py")) and os.path.isdir(os.path.join(path, "comfy"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`start()` blocks until the HTTP server answers; `stop()` ends the process this object started.

    `frontend_packages`: a folder holding the host's own pins of comfyui_frontend_package, comfyui_workflow_templates
    and comfyui_embedded_docs (`pip install --no-deps --target`, see scripts/host_deps.py); it goes first on the
    server's sys.path and its frontend is served, unless `frontend_root` names a static folder to serve instead.
    """

    def __init__(self, host_root: str, base_dir: str, frontend_root: str | None = None, python: str = sys.executable,
                 frontend_packages: str | None = None):
        self.host_root = os.path.realpath(host_root)
        self.base_dir = base_dir
        self.frontend_packages = os.path.realpath(frontend_packages) if frontend_packages else None
        if self.frontend_packages:
            static = os.path.join(self.frontend_packages, "comfyui_frontend_package", "static")
            if not os.path.isfile(os.path.join(static, "index.html")):
                raise FileNotFoundError(f"{frontend_packages} holds no comfyui_frontend_package/static/index.html: "
                                        f"install the host's frontend there (scripts/host_deps.py)")
            frontend_root = frontend_root or static
        self.frontend_root = frontend_root
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = os.path.join(base_dir, "comfyui.log")
        self.process: subprocess.Popen | None = None

    def _prepare(self) -> list[str]:
        dirs = {name: os.path.join(self.base_dir, name)
                for name in ("custom_nodes", "models", "output", "temp", "input", "user")}
        for d in dirs.values():
            os.makedirs(d, exist_ok=True)
        link = os.path.join(dirs["custom_nodes"], PACK_DIR_NAME)
        if not os.path.lexists(link):
            os.symlink(REPO, link, target_is_directory=True)
        # --base-directory: models/ and custom_nodes/ (the only one, holding the link) live in base_dir
        args = ["--cpu", "--listen", "127.0.0.1", "--port", str(self.port), "--base-directory", self.base_dir,
                "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
                "--output-directory", dirs["output"], "--temp-directory", dirs["temp"],
                "--input-directory", dirs["input"], "--user-directory", dirs["user"]]
        if self.frontend_root:
            args += ["--front-end-root", self.frontend_root]
        return args

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        args = self._prepare()
        log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen([self.python, "-c", _LAUNCHER, self.host_root, self.frontend_packages or "",
                                         *args],
                                        cwd=self.host_root, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "system_stats", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as r:
            return json.loads(r.read().decode("utf-8"))

    def wait_for_history(self, timeout: float = 120.0, count: int = 1) -> dict:
        """/history once it holds `count` finished prompts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json("history")
            if len(history) >= count and all(h.get("status", {}).get("completed") is not None for h in history.values()):
                return history
            time.sleep(0.5)
        raise RuntimeError(f"no finished prompt in /history after {timeout:.0f} s:\n{self.log_tail()}")
