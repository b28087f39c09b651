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
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, flags
    part = None
    for line in text.splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("CPU part") and part is None:  # ARM: no model name, a part number
            part = line.split(":", 1)[1].strip()
            name = f"{platform.machine()} CPU part {part}" + (f" ({ARM_PARTS[part]})" if part in ARM_PARTS else "")
        elif line.startswith(("flags", "Features")):  # x86, ARM
            flags = frozenset(line.split(":", 1)[1].split())
            break
    return name, flags


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
