"""What the machine tells about itself, read once at import: the CPU model, its cache sizes
and the vector width of the widest instruction set fastconv runs on it. "auto"'s rules
(fastconv._algorithms) are written in these terms rather than in constants fitted to one CPU;
`fastconv info` shows them."""
from __future__ import annotations

import glob
import os
import platform
from dataclasses import dataclass

from fastconv._kernels import _openmp

SIMD_LEVELS = ("baseline", "avx2", "avx512")
# bytes in one vector register of each instruction-set level ("baseline": SSE2 or NEON)
VECTOR_BYTES = {"baseline": 16, "avx2": 32, "avx512": 64}
SYSFS_CACHES = "/sys/devices/system/cpu/cpu0/cache"
# what we assume when the system says nothing: a common laptop/desktop core of the 2010s-2020s
DEFAULT_CACHES = {"l1d": 32 * 1024, "l2": 256 * 1024, "l3": 8 * 1024 * 1024}
# The most L3 per logical CPU that "auto" believes. No CPU has much more (AMD's X3D parts: 96
# MiB for 8 cores, 16 threads; a 2-vCPU guest on a Zen 5 is told 32 MiB shared by 2), but a
# virtual machine may be told its host's whole L3 as shared by its own few vCPUs only (seen:
# 480 MiB "shared by 2" on a Xeon guest), of which it gets no more than any other tenant.
L3_PER_CPU_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Machine:
    """The facts "auto" reasons with. Cache sizes in bytes (l3 is 0 when there is none);
    l3_shared_by: how many logical CPUs share that L3 (a core's share is l3 / l3_shared_by);
    caches_from: where the sizes came from ("sysfs", "sysconf" or "defaults")."""
    cpu: str
    simd: str
    vector_bytes: int
    l1d: int
    l2: int
    l3: int
    l3_shared_by: int
    caches_from: str

    @property
    def last_level(self) -> int:
        """The largest (outermost) cache that this machine's logical CPUs can count on: L3
        (at most L3_PER_CPU_LIMIT per logical CPU sharing it), or L2 on a CPU without one."""
        if not self.l3:
            return self.l2
        return min(self.l3, L3_PER_CPU_LIMIT * max(1, self.l3_shared_by))

    def lanes(self, itemsize: int) -> int:
        """Elements of `itemsize` bytes in one vector."""
        return max(1, self.vector_bytes // itemsize)

    def as_dict(self) -> dict:
        return {"cpu": self.cpu, "simd": self.simd, "vector_bytes": self.vector_bytes,
                "l1d": self.l1d, "l2": self.l2, "l3": self.l3,
                "l3_shared_by": self.l3_shared_by, "last_level": self.last_level,
                "caches_from": self.caches_from}


def parse_size(text: str) -> int:
    """A sysfs cache size ("48K", "1024K", "32M", "512") in bytes; 0 when unreadable."""
    text = text.strip().upper()
    scale = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" and text else text
    try:
        return int(digits) * scale
    except ValueError:
        return 0


def _cpu_count_in(cpu_list: str) -> int:
    """How many CPUs a sysfs list such as "0-3,8-11" or "0,2" names (1 when unreadable)."""
    count = 0
    for part in cpu_list.strip().split(","):
        first, _, last = part.partition("-")
        try:
            count += int(last or first) - int(first) + 1
        except ValueError:
            return 1
    return max(1, count)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def sysfs_caches(root: str = SYSFS_CACHES) -> dict[str, int]:
    """{"l1d", "l2", "l3", "l3_shared_by"} from Linux's cache descriptions under `root`
    (index*/level, type, size, shared_cpu_list); only the levels found."""
    found: dict[str, int] = {}
    for index in sorted(glob.glob(os.path.join(root, "index*"))):
        level, kind = _read(os.path.join(index, "level")), _read(os.path.join(index, "type"))
        size = parse_size(_read(os.path.join(index, "size")) or "")
        if not size or kind not in ("Data", "Unified"):
            continue  # instruction caches do not hold our data
        key = {"1": "l1d", "2": "l2", "3": "l3"}.get(level or "")
        if key:
            found[key] = size
            if key == "l3":
                found["l3_shared_by"] = _cpu_count_in(
                    _read(os.path.join(index, "shared_cpu_list")) or "0")
    return found


def sysconf_caches() -> dict[str, int]:
    """The same from os.sysconf (glibc's SC_LEVEL*_CACHE_SIZE), where the names exist."""
    found: dict[str, int] = {}
    for key, name in (("l1d", "SC_LEVEL1_DCACHE_SIZE"), ("l2", "SC_LEVEL2_CACHE_SIZE"),
                      ("l3", "SC_LEVEL3_CACHE_SIZE")):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError, AttributeError):  # unknown name, or no sysconf at all
            continue
        if size and size > 0:
            found[key] = size
    return found


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; platform's guess elsewhere)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_levels() -> list[str]:
    """The instruction-set levels this CPU runs and FASTCONV_SIMD=baseline|avx2|avx512 allows
    (a cap, for tests or a CPU that clocks down on wide vectors), narrowest first."""
    cap = os.environ.get("FASTCONV_SIMD", "avx512")
    allowed = SIMD_LEVELS[:SIMD_LEVELS.index(cap) + 1] if cap in SIMD_LEVELS else SIMD_LEVELS
    runs = _openmp.cpu_instruction_sets()
    return [level for level in SIMD_LEVELS if level in runs and level in allowed]


def read(sysfs_root: str = SYSFS_CACHES, cpuinfo: str = "/proc/cpuinfo",
         simd: str | None = None) -> Machine:
    """The machine's facts: caches from sysfs, else from sysconf, else DEFAULT_CACHES (each
    level on its own); the vector width of `simd` (default: the widest level allowed)."""
    caches, source = sysfs_caches(sysfs_root), "sysfs"
    if not caches:
        caches, source = sysconf_caches(), "sysconf"
    if not caches:
        source = "defaults"
    if simd is None:
        simd = (simd_levels() or ["baseline"])[-1]
    l2 = caches.get("l2") or DEFAULT_CACHES["l2"]
    # a CPU with L1 and L2 only says so; one that says nothing gets the default L3
    l3 = caches.get("l3", 0 if caches.get("l2") else DEFAULT_CACHES["l3"])
    return Machine(cpu=cpu_model(cpuinfo), simd=simd, vector_bytes=VECTOR_BYTES.get(simd, 16),
                   l1d=caches.get("l1d") or DEFAULT_CACHES["l1d"], l2=l2, l3=l3,
                   # (no word of its sharing: an L3 is most often the whole chip's)
                   l3_shared_by=caches.get("l3_shared_by", os.cpu_count() or 1),
                   caches_from=source)


FACTS = read()
