"""Convert InstanceDiffusion add-on weights (official .pth, logtd's split files, any supported input) to our file.

``python -m instancediffusion_core convert <in...> <out.safetensors> [--dtype fp16|fp32|bf16|keep]``

Why convert: the official file is 13.6 GB of which 513 tensors (~1.5 GB fp32, ~0.7 GB fp16) are the add-ons;
the converted file loads in a moment, needs no pickle at all, and can be shared. Tensors are streamed: read one,
cast it, write it, drop it, so the converter's memory stays near the size of the largest tensor.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from .checkpoint import (AddonReader, CheckpointError, SD15_COUNTS, group_counts, parse_dtype, write_addons)

GROUP_NAMES = (("position_net", "position net"), ("fusers", "fusers"), ("scaleu", "ScaleU"))


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process so far (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def human_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@dataclass
class ConversionReport:
    inputs: list[str]
    output: str
    source_format: str
    counts: dict
    stored_dtypes: list[str]
    output_dtypes: list[str]
    output_bytes: int
    input_bytes: int
    elapsed_s: float
    peak_rss: int | None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        total_t = sum(self.counts[g]["tensors"] for g, _ in GROUP_NAMES)
        total_p = sum(self.counts[g]["params"] for g, _ in GROUP_NAMES)
        out = [f"source format : {self.source_format}",
               f"input         : {', '.join(self.inputs)} ({human_bytes(self.input_bytes)})",
               "kept          :"]
        for g, name in GROUP_NAMES:
            c = self.counts[g]
            extra = f" ({c['blocks']} blocks)" if "blocks" in c and g != "position_net" else ""
            official = f"  [official SD1.5: {SD15_COUNTS[g]}]" if c["tensors"] != SD15_COUNTS[g] else ""
            out.append(f"  {name:<13} {c['tensors']:>5} tensors {c['params']:>14,} params{extra}{official}")
        out.append(f"  {'total':<13} {total_t:>5} tensors {total_p:>14,} params")
        out += [f"dtype         : {'/'.join(self.stored_dtypes)} -> {'/'.join(self.output_dtypes)}",
                f"output        : {self.output} ({human_bytes(self.output_bytes)})",
                f"elapsed       : {self.elapsed_s:.2f} s",
                f"peak RSS      : {human_bytes(self.peak_rss)}"]
        if self.notes:
            out.append("notes         :")
            out += [f"  - {n}" for n in self.notes]
        return out


def _names(dtypes) -> list[str]:
    return sorted({str(d).replace("torch.", "") for d in dtypes})


def convert(inputs: Sequence[str] | str, output: str, dtype="keep", overwrite: bool = False,
            allow_partial: bool = False) -> ConversionReport:
    """Convert ``inputs`` (one path or several to merge) into our safetensors ``output``."""
    start = time.perf_counter()
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    inputs = [os.fspath(p) for p in inputs]
    output = os.fspath(output)
    cast = parse_dtype(dtype)
    if any(_same_file(p, output) for p in inputs):
        raise CheckpointError(f"output '{output}' is also an input; writing it would destroy the input. Choose "
                              f"another output file")
    if os.path.isdir(output):
        raise CheckpointError(f"output '{output}' is a directory; give the path of a file ending in .safetensors")
    if os.path.lexists(output) and not overwrite:
        raise CheckpointError(f"output '{output}' already exists; pass --overwrite to replace it")
    with AddonReader(inputs, cast) as reader:
        counts = group_counts(reader.shapes)
        missing = [name for g, name in GROUP_NAMES[:2] if counts[g]["tensors"] == 0]
        if missing and not allow_partial:
            raise CheckpointError(
                f"the input has no {' and no '.join(missing)} ({reader.source_format}; found "
                + ", ".join(f"{name} {counts[g]['tensors']} tensors" for g, name in GROUP_NAMES)
                + "). A usable file needs both the position net and the fusers: convert logtd's fusers.ckpt, "
                  "position_net.ckpt and scaleu.ckpt together (several inputs), or pass --allow-partial.")
        _, size = write_addons(reader, output, source=os.path.basename(inputs[0]) if len(inputs) == 1
                               else "+".join(os.path.basename(p) for p in inputs))
        stored, written = _names(reader.stored_dtypes.values()), _names(reader.dtypes.values())
        notes = list(reader.notes)
        source_format = reader.source_format
    return ConversionReport(
        inputs=inputs, output=output, source_format=source_format, counts=counts, stored_dtypes=stored,
        output_dtypes=written, output_bytes=size, input_bytes=sum(os.path.getsize(p) for p in inputs),
        elapsed_s=time.perf_counter() - start, peak_rss=peak_rss_bytes(), notes=notes)


def _same_file(a: str, b: str) -> bool:
    """The same file (links and different spellings of one path included)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def build_parser(prog: str = "python -m instancediffusion_core convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert InstanceDiffusion add-on weights (official instancediffusion_sd15.pth, "
                               "logtd's fusers/position_net/scaleu .ckpt, or our .safetensors) to one small "
                               ".safetensors with the official add-on key names. No code from the input runs.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="input file(s) then the output .safetensors (several inputs are merged)")
    parser.add_argument("--dtype", default="keep", choices=("fp16", "fp32", "bf16", "keep"),
                        help="precision of the written tensors (default: keep the stored precision)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write even if the position net or the fusers are missing")
    return parser


def cli_main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if len(args.paths) < 2:
        parser.error("give at least one input and the output .safetensors")
    *inputs, output = args.paths
    try:
        report = convert(inputs, output, dtype=args.dtype, overwrite=args.overwrite,
                         allow_partial=args.allow_partial)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:                 # the file system said no (permissions, disk full, a folder in the way)
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        print(f"error: cannot read or write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0
