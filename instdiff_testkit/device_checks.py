"""GPU situations simulated on a CPU-only machine: a strict stand-in device and a device-sync counter.

- ``StrictDevices``: a TorchFunctionMode that fails any op mixing tensors of different devices (the error CUDA
  raises for a weight left on the CPU). The ``meta`` device is the stand-in accelerator: it computes shapes only,
  so a whole UNet step costs nothing, but not every meta kernel checks devices (``F.linear`` with a CPU weight
  passes on meta), hence this mode. 0-dim CPU tensors are allowed, as CUDA allows them (CPU scalars).
- ``SyncCounter``: counts the calls that make the host wait for the device on a GPU (``.item()``, ``float()``,
  ``int()``, ``bool()``, ``.tolist()``, ``.numpy()``, ``.cpu()``) issued by code under given folders (the pack),
  with where they came from. On a GPU such a call on a CUDA tensor is a full device synchronisation; on the CPU
  nothing waits, so the count is what a GPU run would pay at most (a read of a tensor that is on the CPU in a GPU
  run counts too). Not seen: ``.to(device)`` copies (on the CPU the target is the CPU either way; on CUDA a
  blocking host->device copy of pageable memory also synchronises) - ``scripts/gpu-check.sh`` measures those with
  ``torch.cuda.set_sync_debug_mode``.
"""
from __future__ import annotations

import os
import sys
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_TORCH_DIR = os.path.realpath(os.path.dirname(torch.__file__))
MOVES = {torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.copy_, torch.Tensor.type}


class DeviceMismatch(RuntimeError):
    pass


class StrictDevices(TorchFunctionMode):
    """Raise ``DeviceMismatch`` for an op whose tensor arguments (0-dim CPU tensors aside) are on two devices."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in MOVES:
            devices = set()
            for t in tree_flatten((args, kwargs))[0]:
                if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.ndim == 0):
                    devices.add(t.device)
            if len(devices) > 1:
                raise DeviceMismatch(f"{getattr(func, '__name__', func)}: tensors on {sorted(map(str, devices))}")
        return func(*args, **kwargs)


SYNC_METHODS = {torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
                torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu}


class SyncCounter(TorchFunctionMode):
    """Counts host<-device reads issued from files under ``roots`` (real paths). ``calls``: Counter of
    ``(file, line, function, method)``; ``total``: their sum."""

    def __init__(self, roots):
        super().__init__()
        self.roots = tuple(os.path.realpath(r) + os.sep for r in roots)
        self.calls: Counter = Counter()
        self._owner: dict[str, bool] = {}

    def _site(self):
        frame = sys._getframe(2)
        while frame is not None:
            path = frame.f_code.co_filename
            real = os.path.realpath(path)
            if not real.startswith(_TORCH_DIR + os.sep) and real != os.path.realpath(__file__):
                mine = self._owner.get(path)
                if mine is None:
                    mine = self._owner[path] = real.startswith(self.roots)
                return (os.path.basename(real), frame.f_lineno, frame.f_code.co_name) if mine else None
            frame = frame.f_back
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_METHODS:
            site = self._site()
            if site is not None:
                self.calls[site + (getattr(func, "__name__", str(func)),)] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.calls.values())
