"""What the CPU is and which of its instruction-set features matter here (bf16 arithmetic above all).

Read from ``/proc/cpuinfo`` (Linux). The features that decide bf16: ``amx_bf16`` (Intel AMX tiles, Sapphire
Rapids and later: bf16 matrix multiply at several times the fp32 rate) and ``avx512_bf16`` (bf16 dot
products in AVX-512 registers: Cooper Lake, AMD Zen 4/5). Without either, bf16 is emulated and slower
than fp32, so the OpenVINO backend runs f32. Elsewhere than Linux the flags are unknown and bf16 is not
chosen automatically.
"""

import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

# The features reported by ``make bench`` and recorded with every benchmark, in this order.
REPORTED_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
BF16_FEATURES = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset  # empty when unknown

    @property
    def features(self) -> dict[str, bool]:
        """The reported features, each present or not (all False when the flags are unknown)."""
        return {name: name in self.flags for name in REPORTED_FEATURES}

    def describe_features(self) -> str:
        present = [name for name, has in self.features.items() if has]
        if not self.flags:
            return "ISA features unknown"
        return " ".join(present) if present else "none of " + " ".join(REPORTED_FEATURES)

    def bf16_unsupported(self) -> Optional[str]:
        """Why this CPU has no native bf16 arithmetic (a short phrase), or None when it has."""
        if not self.flags:
            return f"the CPU's features cannot be read on {platform.system() or 'this system'}"
        if any(name in self.flags for name in BF16_FEATURES):
            return None
        return f"the CPU ({self.model}) has neither AMX-BF16 nor AVX512-BF16"

    def bf16_unit(self) -> Optional[str]:
        """``"AMX"`` or ``"AVX512-BF16"``: what runs bf16 matrix products here; None without either."""
        if "amx_bf16" in self.flags:
            return "AMX"
        return "AVX512-BF16" if "avx512_bf16" in self.flags else None


def parse_cpuinfo(text: str) -> CpuInfo:
    """The model name and flags of the first processor listed in ``/proc/cpuinfo``'s text."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = frozenset(value.split())
        if model is not None and flags is not None:
            break
    return CpuInfo(model or platform.processor() or platform.machine(), flags or frozenset())


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    try:
        with open("/proc/cpuinfo") as file:
            return parse_cpuinfo(file.read())
    except OSError:
        return CpuInfo(platform.processor() or platform.machine(), frozenset())
