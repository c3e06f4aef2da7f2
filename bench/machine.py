"""Which machine a benchmark ran on, and saving results so that each CPU model keeps its own.

Floating-point speed depends on the CPU far more than on anything in the course: AMX multiplies
bfloat16 matrices several times faster than AVX-512 multiplies float32 ones, and a CPU without
either is slower again. Every saved result therefore names its CPU and the instruction sets that
matter, and saving a new measurement replaces only the earlier results of the same CPU model.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from course_lib.trainer import best_precision, cpu_flags


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def instruction_sets() -> str:
    """The vector and matrix units that decide training speed, e.g. ``"AVX-512, AVX512-BF16, AMX"``."""
    flags = cpu_flags()
    names = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                     ("amx_bf16", "AMX")) if flag in flags]
    if "AVX-512" in names:
        names.remove("AVX2")  # implied
    return ", ".join(names) or platform.machine()


def describe() -> dict:
    """The fields every saved result carries."""
    return {"cpu": cpu_name(), "isa": instruction_sets(), "cores": os.cpu_count(),
            "auto_precision": best_precision("cpu"), "torch": torch.__version__,
            "load_average": round(os.getloadavg()[0], 2)}  # above 0 on a 2-core machine: it was shared


def save_rows(path: Path, rows: list[dict], key: tuple[str, ...] = ("cpu",)) -> None:
    """Write ``rows`` to ``path``, replacing the saved rows that share their ``key`` fields (by default
    the CPU model) and keeping all others, such as the results of other CPUs."""
    new = {tuple(row[k] for k in key) for row in rows}
    kept = json.loads(path.read_text()) if path.exists() else []
    kept = [row for row in kept if tuple(row.get(k) for k in key) not in new]
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(kept + rows, indent=1) + "\n")
