#!/usr/bin/env python3
"""Install what ComfyUI host trees need into the active venv, for the host tier (tests/host) and the browser test.

    python scripts/host_deps.py --frontends DIR HOST [HOST...]

* The Python requirements of all hosts in ONE pip resolve (one venv serves every host, so pip has to pick
  versions that satisfy all of them), with the venv's torch as a constraint (torch==<installed version>, never a
  CUDA build). torch, torchvision and torchaudio are left out: the test kit stubs torchvision and torchaudio
  (instdiff_testkit/comfy_harness.py), since PyPI's wheels are built for another torch and fail to import beside the
  CPU one ("operator torchvision::nms does not exist"). Requirements that depend on torchvision (spandrel) are
  installed with --no-deps, and a torchvision/torchaudio that got in anyway is uninstalled.
* Each host's frontend pins (comfyui-frontend-package, comfyui-workflow-templates, comfyui-embedded-docs: other
  versions per host, and a venv holds one version of each) go to DIR/comfyui-<version>/ with
  `pip install --no-deps --target`. `ComfyServer(frontend_packages=that folder)` (instdiff_testkit/comfy_server.py;
  COMFYUI_FRONTEND_PACKAGES in tests/e2e) puts it first on the server's sys.path and serves its frontend. The
  template packages come without their media sub-packages (~450 MB; only the template browser shows them).

Nothing is written into the host trees. Prints one line per host; exits non-zero when pip fails.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile

TORCH = {"torch", "torchvision", "torchaudio"}
FRONTEND = ("comfyui-frontend-package", "comfyui-workflow-templates", "comfyui-embedded-docs")
NEEDS_TORCHVISION = {"spandrel"}          # installed without their dependencies (theirs are in the list anyway)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_version(root: str) -> str:
    try:
        with open(os.path.join(root, "comfyui_version.py"), encoding="utf-8") as f:
            match = re.search(r"""__version__\s*=\s*["']([^"']+)""", f.read())
        return match.group(1) if match else "unknown"
    except OSError:
        return "unknown"


def read_requirements(root: str) -> list[tuple[str, str]]:
    """[(normalized name, requirement line)] of `<root>/requirements.txt`, comments and pip options left out."""
    out = []
    with open(os.path.join(root, "requirements.txt"), encoding="utf-8") as f:
        for raw in f:
            line = raw.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("-"):
                print(f"host_deps: {root}/requirements.txt: option line ignored: {line}", file=sys.stderr)
                continue
            match = _NAME.match(line)
            if match:
                out.append((normalize(match.group(1)), line))
    return out


def split_requirements(root: str) -> dict:
    """{"venv": [lines], "no_deps": [lines], "frontend": [lines]} of one host (torch, torchvision, torchaudio out)."""
    parts = {"venv": [], "no_deps": [], "frontend": []}
    for name, line in read_requirements(root):
        if name in TORCH:
            continue
        parts["frontend" if name in FRONTEND else "no_deps" if name in NEEDS_TORCHVISION else "venv"].append(line)
    return parts


def frontend_dir(frontends: str, root: str) -> str:
    return os.path.join(frontends, f"comfyui-{host_version(root)}")


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    print("+ pip install " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def install(hosts: list[str], frontends: str) -> list[str]:
    torch_version = _installed("torch")
    if torch_version is None:
        raise SystemExit("host_deps: torch is not installed in this venv; install the CPU torch first")
    parts = [split_requirements(h) for h in hosts]
    venv = list(dict.fromkeys(line for p in parts for line in p["venv"]))
    no_deps = list(dict.fromkeys(line for p in parts for line in p["no_deps"]))
    with tempfile.TemporaryDirectory() as tmp:
        reqs, constraints = os.path.join(tmp, "requirements.txt"), os.path.join(tmp, "constraints.txt")
        with open(reqs, "w", encoding="utf-8") as f:
            f.write("\n".join(venv) + "\n")
        with open(constraints, "w", encoding="utf-8") as f:
            f.write(f"torch=={torch_version.split('+')[0]}\n")
        _pip("-c", constraints, "-r", reqs)
        if no_deps:
            _pip("--no-deps", "-c", constraints, *no_deps)
    stray = [d for d in ("torchvision", "torchaudio") if _installed(d)]
    if stray:
        print(f"host_deps: uninstalling {', '.join(stray)} (built for another torch; the test kit stubs them)")
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *stray], check=True)
    if _installed("torch") != torch_version:
        raise SystemExit(f"host_deps: torch changed from {torch_version} to {_installed('torch')}")

    lines = []
    for host, p in zip(hosts, parts):
        target = frontend_dir(frontends, host)
        pins = "\n".join(sorted(p["frontend"])) + "\n"
        stamp = os.path.join(target, ".pins")
        try:
            with open(stamp, encoding="utf-8") as f:
                fresh = f.read() != pins
        except OSError:
            fresh = True
        if fresh and p["frontend"]:
            shutil.rmtree(target, ignore_errors=True)
            _pip("--no-deps", "--target", target, *p["frontend"])
            with open(stamp, "w", encoding="utf-8") as f:
                f.write(pins)
        shown = ", ".join(p["frontend"]) or "no frontend pins"
        lines.append(f"ComfyUI {host_version(host)}: {shown} -> {target if p['frontend'] else '(venv)'}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frontends", required=True, help="folder for the per-host frontend packages")
    parser.add_argument("hosts", nargs="+", help="ComfyUI root folders (with requirements.txt)")
    args = parser.parse_args(argv)
    for host in args.hosts:
        if not os.path.isfile(os.path.join(host, "requirements.txt")):
            parser.error(f"{host}: no requirements.txt (not a ComfyUI root folder)")
    for line in install([os.path.realpath(h) for h in args.hosts], os.path.abspath(args.frontends)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
