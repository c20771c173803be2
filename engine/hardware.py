"""What the machine a job runs on supports, and the fastest correct settings for it.

A run's configuration says ``training.precision: auto``, ``training.channels_last: auto``,
``training.threads: null`` and ``data.workers: null`` by default; :func:`decide` turns those into
concrete settings for the device the job actually got, and says why:

- **precision**: bfloat16 autocast only where the device runs it natively -- a CUDA GPU with bf16
  (Ampere and newer), or a CPU that reports AVX-512-BF16 or AMX-BF16 (and whose oneDNN is not
  capped below that ISA by ``ONEDNN_MAX_CPU_ISA``); float32 everywhere else. On an AVX2-only CPU,
  bf16 is emulated and measured 5-9x slower than float32 (benchmarks/results/speed.md).
- **memory format**: channels-last where oneDNN (CPU) or cuDNN (GPU) run convolutions: measured
  1.5x faster than NCHW in float32 and bf16 alike on AVX2 and AVX-512 CPUs.
- **threads**: torch intra-op threads = the CPUs of the job's allocation (``OMP_NUM_THREADS`` when
  set, else ``SLURM_CPUS_PER_TASK`` and the process's CPU affinity, shared by the ranks of this
  node), less the DataLoader workers, and no more than the allocated CPUs other processes leave
  idle (:func:`idle_cpus`; on a loaded machine 2 threads ran 10-25x slower than 1).
- **workers**: DataLoader worker processes from the CPUs left: none below 4 CPUs on a CPU job
  (a worker would take a core from the network), one per 8 CPUs above; on a GPU up to 8 (one CPU
  kept for the main process), with pinned memory; workers are persistent across epochs.

A user's explicit value always wins; ``bf16-mixed`` forced on a CPU without native bf16 is
allowed with a :class:`HardwareWarning` naming the slowdown risk. Impossible values
(``training.threads`` < 1, more workers than CPUs) raise :class:`HardwareError` before any work.

Example
-------
>>> from engine.config import ExperimentConfig
>>> d = decide(ExperimentConfig(), device="cpu", cpus=(2, "test"), bf16=(False, "no avx512_bf16"), idle=2.0)
>>> d.precision, d.channels_last == torch.backends.mkldnn.is_available(), d.threads, d.workers
('32-true', True, 2, 0)
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import torch

#: Measured on an AVX2-only CPU (AMD EPYC; and AVX-512 CPUs with oneDNN capped to AVX2): bf16
#: autocast trained the 8-32 filter ResNet 5-9x slower than float32.
BF16_SLOWDOWN = "5-9x slower than float32"

#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) that still include native bf16 instructions.
_ONEDNN_BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT"}


class HardwareError(ValueError):
    """Settings this machine cannot honour (threads < 1, more workers than CPUs); the message
    names the value, the CPUs the job has and what would be accepted."""


class HardwareWarning(UserWarning):
    """An explicit setting that works but is likely slow on this machine."""


# -- what the machine has -----------------------------------------------------------------------

@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16(flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU runs bfloat16 natively, and why (or why not)."""
    flags = cpu_flags() if flags is None else flags
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    capability = torch.backends.cpu.get_cpu_capability()
    if not native:
        what = f"{platform.machine()} CPU" + (f" ({capability})" if capability else "")
        return False, f"{what} reports neither avx512_bf16 nor amx_bf16: bf16 would be emulated ({BF16_SLOWDOWN})"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if isa and isa not in _ONEDNN_BF16_ISAS:
        return False, f"CPU has {'/'.join(native)} but ONEDNN_MAX_CPU_ISA={isa} caps oneDNN below native bf16"
    if capability not in ("AVX512", ""):
        return False, f"CPU has {'/'.join(native)} but torch dispatches {capability} kernels (ATEN_CPU_CAPABILITY)"
    return True, f"CPU reports {'/'.join(native)} (native bf16)"


def cuda_native_bf16(index: int = 0) -> tuple[bool, str]:
    """Whether CUDA device ``index`` runs bfloat16 natively (compute capability >= 8.0)."""
    name = torch.cuda.get_device_name(index)
    major, minor = torch.cuda.get_device_capability(index)
    if major >= 8:
        return True, f"{name} (compute capability {major}.{minor}) has native bf16"
    return False, f"{name} (compute capability {major}.{minor}) has no native bf16 (needs >= 8.0, Ampere)"


def native_bf16(device: str) -> tuple[bool, str]:
    return cuda_native_bf16(torch.cuda.current_device()) if device == "cuda" else cpu_native_bf16()


def _local_ranks() -> int:
    """Ranks of this job sharing this node's CPUs (local DDP started by our worker or torchrun)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def cpu_allocation() -> tuple[int, str]:
    """The CPUs this process may use for compute, and where that number comes from.

    ``OMP_NUM_THREADS`` (the user's or the site's explicit choice) wins; otherwise the smaller of
    ``SLURM_CPUS_PER_TASK`` (per task already) and the process's CPU affinity divided among the
    ranks of this node that share it.
    """
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), f"OMP_NUM_THREADS={omp}"
    try:
        affinity = len(os.sched_getaffinity(0))
        source = "CPU affinity"
    except AttributeError:  # macOS, Windows
        affinity, source = os.cpu_count() or 1, "os.cpu_count()"
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and 0 < int(slurm) <= affinity:
        return int(slurm), f"SLURM_CPUS_PER_TASK={slurm}"
    ranks = _local_ranks()
    if ranks > 1:
        return max(1, affinity // ranks), f"{source} ({affinity}) shared by {ranks} local ranks"
    return affinity, f"{source} ({affinity})"


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """``{cpu: (idle ticks, total ticks)}`` from ``/proc/stat`` (empty where there is none)."""
    out = {}
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    ticks = [int(v) for v in fields[:8]]
                    out[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    except (OSError, ValueError, IndexError):
        return {}
    return out


def idle_cpus(interval: float = 0.25) -> float | None:
    """How many of this process's CPUs other processes leave idle: the sum of their idle
    fractions over ``interval`` seconds (None where ``/proc/stat`` or the affinity is unknown).

    A CPU of the allocation that another process keeps busy is not ours to use: an OpenMP team
    with a thread on it waits for that thread at every parallel region (measured on a loaded
    2-CPU machine: 2 threads 10-25x slower than 1).
    """
    try:
        mine = os.sched_getaffinity(0)
    except AttributeError:
        return None
    before = _cpu_ticks()
    if not before:
        return None
    time.sleep(interval)
    after = _cpu_ticks()
    idle = 0.0
    for cpu in mine:
        if cpu in before and cpu in after:
            total = after[cpu][1] - before[cpu][1]
            idle += (after[cpu][0] - before[cpu][0]) / total if total > 0 else 1.0
    return idle


def resolve_device(device: str) -> str:
    """``training.device`` as ``"cuda"`` or ``"cpu"`` (``auto``: CUDA when visible)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# -- the decision -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """The concrete settings for one process, with the reason for each."""

    device: str
    precision: str
    channels_last: bool
    threads: int
    workers: int
    pin_memory: bool
    persistent_workers: bool
    cpus: int
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "cpu_model": _cpu_model()}

    def summary(self) -> str:
        return (f"{self.device}: precision {self.precision}, {'channels-last' if self.channels_last else 'NCHW'}, "
                f"{self.threads} thread(s), {self.workers} DataLoader worker(s) of {self.cpus} CPU(s)")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _check_count(name: str, value: Any, minimum: int, cpus: int, source: str) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise HardwareError(f"{name}={value!r} is not valid; expected an integer >= {minimum} "
                            f"or null (chosen from the job's CPUs: {cpus}, from {source})")


def default_workers(device: str, cpus: int) -> int:
    """DataLoader workers for ``cpus`` CPUs when the user did not choose."""
    if device == "cuda":
        return max(0, min(8, cpus - 1))
    # On a CPU job a worker takes a core from the network's threads, which costs more than the
    # data wait it saves below 4 CPUs (measured by benchmarks.speed).
    return 0 if cpus < 4 else min(4, max(1, cpus // 8))


def decide(cfg, device: str | None = None, cpus: tuple[int, str] | None = None,
           bf16: tuple[bool, str] | None = None, idle: float | bool | None = None) -> Decision:
    """The settings for configuration ``cfg`` on this machine.

    Parameters
    ----------
    cfg : ExperimentConfig
        Its ``training.precision``, ``training.channels_last``, ``training.threads``,
        ``training.device`` and ``data.workers`` are read; "auto"/None are decided here.
    device, cpus, bf16, idle : optional
        Override what is detected (``"cpu"``/``"cuda"``; ``(count, source)``; ``(native, reason)``;
        idle CPUs, or False not to look), for tests and benchmarks.

    Raises
    ------
    HardwareError
        ``training.threads`` < 1 or ``data.workers`` < 0 or larger than the CPUs of the job.

    Warns
    -----
    HardwareWarning
        ``training.precision='bf16-mixed'`` forced on a device without native bf16.
    """
    t = cfg.training
    device = resolve_device(device or t.device)
    cpus, source = cpus or cpu_allocation()
    _check_count("training.threads", t.threads, 1, cpus, source)
    workers_cfg = cfg.data.workers
    _check_count("data.workers", workers_cfg, 0, cpus, source)
    reasons: dict[str, str] = {}

    native, why = bf16 if bf16 is not None else native_bf16(device)
    if t.precision == "auto":
        precision = "bf16-mixed" if native else "32-true"
        reasons["precision"] = f"auto -> {precision}: {why}"
    else:
        precision = t.precision
        reasons["precision"] = f"{precision} as configured"
        if precision == "bf16-mixed" and not native:
            message = (f"training.precision='bf16-mixed' was forced on a device without native bf16: {why}. "
                       f"Expect training to be {BF16_SLOWDOWN}; 'auto' or '32-true' is faster here")
            warnings.warn(message, HardwareWarning, stacklevel=2)
            reasons["precision"] += f" (warned: {why})"

    if t.channels_last == "auto":
        channels_last = device == "cuda" or torch.backends.mkldnn.is_available()
        reasons["channels_last"] = (f"auto -> {channels_last}: " + (
            "cuDNN/oneDNN convolutions are faster channels-last (measured 1.5x on CPU)" if channels_last
            else "no oneDNN on this CPU: NCHW"))
    else:
        channels_last = bool(t.channels_last)
        reasons["channels_last"] = f"{channels_last} as configured"

    if workers_cfg is None:
        workers = default_workers(device, cpus)
        reasons["workers"] = f"auto -> {workers} for {cpus} CPU(s) ({source}) on {device}"
    else:
        if workers_cfg > cpus:
            raise HardwareError(f"data.workers={workers_cfg} is larger than the {cpus} CPU(s) this job has "
                                f"({source}); accepted: 0 .. {cpus} (or null to choose from the CPUs)")
        workers = workers_cfg
        reasons["workers"] = f"{workers} as configured"

    if t.threads is None:
        threads = max(1, cpus - workers) if device == "cpu" else max(1, min(4, cpus - workers))
        reasons["threads"] = f"auto -> {threads}: {cpus} CPU(s) from {source}, less {workers} worker(s)"
        # Threads on CPUs that other processes keep busy stall every parallel region: on a shared
        # machine use only the CPUs found idle (an explicit OMP_NUM_THREADS is taken as is).
        if device == "cpu" and threads > 1 and idle is not False and not source.startswith("OMP_NUM_THREADS"):
            free = idle_cpus() if idle is None else float(idle)
            if free is not None and int(free + 0.5) < threads:
                threads = max(1, int(free + 0.5))
                reasons["threads"] = (f"auto -> {threads}: {cpus} CPU(s) from {source}, less {workers} worker(s), "
                                      f"but only {free:.1f} of them idle (other processes' load): more threads "
                                      "would wait on busy CPUs at every parallel region")
    else:
        threads = t.threads
        reasons["threads"] = f"{threads} as configured" + (f" (more than the {cpus} CPUs of the job: "
                                                            "oversubscribed)" if threads > cpus else "")
    return Decision(device=device, precision=precision, channels_last=channels_last, threads=threads,
                    workers=workers, pin_memory=device == "cuda" and workers > 0,
                    persistent_workers=workers > 0, cpus=cpus, reasons=reasons)


def apply_threads(decision: Decision) -> None:
    """Set torch's intra-op threads for this process (inter-op pools are left to torch)."""
    if torch.get_num_threads() != decision.threads:
        torch.set_num_threads(decision.threads)


def settle(cfg, decision: Decision):
    """``cfg`` with its automatic training/data settings replaced by ``decision``'s."""
    return cfg.replace(training={"precision": decision.precision, "channels_last": decision.channels_last,
                                 "threads": decision.threads, "device": decision.device},
                       data={"workers": decision.workers})


__all__ = ["Decision", "HardwareError", "HardwareWarning", "apply_threads", "cpu_allocation", "cpu_flags",
           "cpu_native_bf16", "cuda_native_bf16", "decide", "default_workers", "native_bf16", "resolve_device",
           "settle"]
