"""Hardware-aware defaults: precision, memory format, threads and workers (engine.hardware)."""

import json

import pytest
import torch

from engine import hardware
from engine.config import ConfigError, ExperimentConfig
from engine.hardware import HardwareError, HardwareWarning, cpu_allocation, cpu_native_bf16, decide
from engine.runs import RunStore
from engine.training.trainer import train

NATIVE = (True, "test: native bf16")
EMULATED = (False, "test: no avx512_bf16")


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_auto_precision_follows_native_bf16():
    cfg = ExperimentConfig()
    assert cfg.training.precision == "auto" and cfg.training.channels_last == "auto"
    assert decide(cfg, device="cpu", cpus=(2, "test"), bf16=NATIVE).precision == "bf16-mixed"
    fallback = decide(cfg, device="cpu", cpus=(2, "test"), bf16=EMULATED)
    assert fallback.precision == "32-true"
    assert "no avx512_bf16" in fallback.reasons["precision"]


def test_explicit_precision_wins():
    cfg = ExperimentConfig().replace(training={"precision": "32-true", "channels_last": False, "threads": 1})
    d = decide(cfg, device="cpu", cpus=(4, "test"), bf16=NATIVE)
    assert (d.precision, d.channels_last, d.threads) == ("32-true", False, 1)
    assert "as configured" in d.reasons["precision"]


def test_forced_bf16_on_emulating_cpu_is_allowed_with_a_warning():
    cfg = ExperimentConfig().replace(training={"precision": "bf16-mixed"})
    with pytest.warns(HardwareWarning, match=r"bf16-mixed.*5-9x slower than float32"):
        d = decide(cfg, device="cpu", cpus=(2, "test"), bf16=EMULATED)
    assert d.precision == "bf16-mixed"


def test_cpu_bf16_detection_from_flags(clean_env):
    assert cpu_native_bf16(frozenset({"avx2", "fma"}))[0] is False
    assert "neither avx512_bf16 nor amx_bf16" in cpu_native_bf16(frozenset({"avx2"}))[1]
    clean_env.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert cpu_native_bf16(frozenset({"avx512f", "amx_bf16"}))[0] is True
    clean_env.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # a site capping oneDNN: bf16 would be emulated
    native, why = cpu_native_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert not native and "ONEDNN_MAX_CPU_ISA=AVX2" in why


def test_threads_from_the_allocation(clean_env):
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert cpu_allocation() == (3, "OMP_NUM_THREADS=3")
    clean_env.delenv("OMP_NUM_THREADS")
    affinity = len(__import__("os").sched_getaffinity(0))
    clean_env.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpu_allocation() == (1, "SLURM_CPUS_PER_TASK=1")
    clean_env.delenv("SLURM_CPUS_PER_TASK")
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu_allocation()[0] == max(1, affinity // 2)


def test_workers_and_threads_share_the_cpus():
    cfg = ExperimentConfig()
    small = decide(cfg, device="cpu", cpus=(2, "test"), bf16=EMULATED, idle=False)
    assert (small.threads, small.workers, small.persistent_workers, small.pin_memory) == (2, 0, False, False)
    big = decide(cfg, device="cpu", cpus=(16, "test"), bf16=EMULATED, idle=False)
    assert big.workers == 2 and big.threads == 14 and big.persistent_workers
    gpu = decide(cfg, device="cuda", cpus=(16, "test"), bf16=NATIVE)
    assert gpu.workers == 8 and gpu.pin_memory and gpu.channels_last and gpu.precision == "bf16-mixed"


def test_threads_avoid_cpus_that_other_processes_keep_busy():
    cfg = ExperimentConfig()
    free = decide(cfg, device="cpu", cpus=(4, "CPU affinity (4)"), bf16=EMULATED, idle=3.6)
    assert (free.workers, free.threads) == (1, 3)  # 4 CPUs: one DataLoader worker, three threads
    loaded = decide(cfg, device="cpu", cpus=(4, "CPU affinity (4)"), bf16=EMULATED, idle=1.2)
    assert loaded.threads == 1 and "only 1.2 of them idle" in loaded.reasons["threads"]
    assert decide(cfg, device="cpu", cpus=(4, "CPU affinity (4)"), bf16=EMULATED, idle=0.0).threads == 1
    # the user's OMP_NUM_THREADS and an explicit training.threads are taken as they are
    assert decide(cfg, device="cpu", cpus=(4, "OMP_NUM_THREADS=4"), bf16=EMULATED, idle=0.0).threads == 3
    explicit = cfg.replace(training={"threads": 3})
    assert decide(explicit, device="cpu", cpus=(4, "CPU affinity (4)"), bf16=EMULATED, idle=0.0).threads == 3
    measured = hardware.idle_cpus(interval=0.05)
    assert measured is None or 0.0 <= measured <= len(__import__("os").sched_getaffinity(0)) + 1e-6


@pytest.mark.parametrize("field, value, match", [
    ("threads", 0, r"training\.threads=0 is not valid; expected an integer >= 1 or null"),
    ("threads", -2, r"training\.threads=-2 is not valid"),
    ("channels_last", "sometimes", r"training\.channels_last='sometimes' is not valid; accepted: auto, True, False"),
])
def test_bad_training_settings_are_refused(field, value, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig().replace(training={field: value}).validate()


def test_more_workers_than_cpus_is_refused():
    cfg = ExperimentConfig().replace(data={"workers": 3})
    with pytest.raises(HardwareError, match=r"data\.workers=3 is larger than the 2 CPU\(s\).*accepted: 0 \.\. 2"):
        decide(cfg, device="cpu", cpus=(2, "test"), bf16=EMULATED)
    slurm = cfg.replace(launch={"launcher": "slurm", "cpus_per_task": 2})
    with pytest.raises(ConfigError, match=r"data\.workers=3 is larger than launch\.cpus_per_task=2"):
        slurm.validate()
    with pytest.raises(ConfigError, match=r"data\.workers=999 is larger than this machine's"):
        ExperimentConfig().replace(data={"workers": 999}).validate()


def test_old_configs_with_num_workers_still_load():
    cfg = ExperimentConfig.from_dict({"training": {"num_workers": 0, "precision": "bf16-mixed"}})
    assert cfg.data.workers is None and cfg.training.precision == "bf16-mixed"


def test_training_records_the_decision(tiny_config, tmp_path, keep_threads, clean_env):
    cfg = tiny_config.replace(training={"epochs": 1, "samples_per_epoch": 16, "threads": 1})
    run = RunStore(tmp_path).create(cfg)
    train(run)
    record = json.loads((run.path / "hardware.json").read_text())
    assert record["threads"] == 1 and torch.get_num_threads() == 1
    assert record["precision"] in ("bf16-mixed", "32-true") and record["reasons"]["precision"].startswith("auto -> ")
    native = hardware.native_bf16("cpu")[0]
    assert record["precision"] == ("bf16-mixed" if native else "32-true")
    assert run.status()["hardware"].startswith("cpu: precision")
    assert any(e["text"].startswith("hardware: ") for e in run.events("message"))


def test_forced_bf16_on_capped_cpu_warns_before_training(tiny_config, tmp_path, keep_threads, clean_env):
    # ONEDNN_MAX_CPU_ISA=AVX2 makes this machine an AVX2-only one for the decision (on a real AVX2
    # CPU the flags alone do it): the run is allowed, with the warning, and records why.
    clean_env.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    cfg = tiny_config.replace(training={"epochs": 1, "samples_per_epoch": 16, "precision": "bf16-mixed"})
    run = RunStore(tmp_path).create(cfg)
    with pytest.warns(HardwareWarning, match="slower than float32"):
        train(run)
    assert "warned" in json.loads((run.path / "hardware.json").read_text())["reasons"]["precision"]


def test_zero_threads_fails_before_any_data(tiny_config, tmp_path):
    run = RunStore(tmp_path).create(tiny_config.replace(training={"threads": 0}))
    with pytest.raises(ConfigError, match=r"training\.threads=0"):
        train(run)
    assert not (run.path / "hardware.json").exists() and not run.checkpoint("last").exists()
