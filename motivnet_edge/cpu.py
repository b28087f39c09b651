"""What this CPU can do: its /proc/cpuinfo flags, and which of them make INT8 or bf16 pay.

One parser serves the precision rules (backends), the exporter's recorded latencies and
every benchmark's results file, so "the CPU's flags" mean the same thing everywhere.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

#: INT8 dot-product instructions: without one of them INT8 inference is not faster than fp32.
#: x86: VNNI, AMX; ARM64 (the ``Features`` line): SDOT/UDOT (asimddp) and the 8-bit matrix multiply (i8mm).
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
#: Native bf16 arithmetic: OpenVINO's CPU plugin runs bf16 only where one of these exists.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: The flags a results file records (vector width, INT8 and bf16 support; ARM's NEON and SVE).
REPORTED_FLAGS = (frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "asimd", "sve", "bf16"})
                  | INT8_FLAGS | BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, all flags) of the first CPU in /proc/cpuinfo; (platform name, empty) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in a /proc/cpuinfo text: x86's "model name" and
    "flags", or ARM's "CPU part" (named where ``ARM_PARTS`` knows it) and "Features"."""
    name, flags, part = None, None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "CPU part" and part is None:
            part = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = frozenset(value.split())
        if not line.strip() and flags is not None:
            break  # the first processor's block ends
    if name is None:
        machine = platform.machine() or "cpu"
        name = f"{machine} CPU part {part}" + (f" ({ARM_PARTS[part]})" if part in ARM_PARTS else "") if part \
            else platform.processor() or machine
    return name, flags or frozenset()


#: Arm's own part numbers (CPU implementer 0x41) of the cores edge boards carry.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1",
             "0xd42": "Cortex-A78AE", "0xd41": "Cortex-A78"}


def cpu_flags() -> frozenset[str]:
    return cpu_info()[1]


def int8_flags() -> frozenset[str]:
    """This CPU's INT8 dot-product instruction sets (empty: INT8 cannot beat fp32 here)."""
    return cpu_flags() & INT8_FLAGS


def has_bf16() -> bool:
    return bool(cpu_flags() & BF16_FLAGS)


def reported_flags() -> list[str]:
    """The flags worth writing beside every figure, sorted."""
    return sorted(cpu_flags() & REPORTED_FLAGS)
