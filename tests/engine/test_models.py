"""The model zoo, parametrised over everything registered (timm-style): every backbone x every
valid upsampling x scales, plus the options (normalisation, dropout, MC dropout, activation), the
localized convolution block, spatio-temporal samples, and configuration-time refusals."""

from __future__ import annotations

import io

import pytest
import torch

from engine.config import ModelConfig
from engine.models import build_model, count_parameters, list_models, set_mc_dropout
from engine.models.upsampling import POST_SCALES
from engine.registry import BACKBONES, UPSAMPLERS

LR = 8  # LR grid edge: tiny, but large enough for two U-Net levels and a 4x4 Swin window
IN, STATIC = 3, 2


def _combos():
    out = []
    for backbone in BACKBONES.names():
        allowed = BACKBONES.info(backbone).get("upsampling") or UPSAMPLERS.names()
        for upsampling in allowed:
            scales = UPSAMPLERS.info(upsampling).get("scales") or (2, 3, 6)  # pin: any factor
            for scale in scales:
                out.append(pytest.param(backbone, upsampling, scale, id=f"{backbone}-{upsampling}-x{scale}"))
    return out


COMBOS = _combos()


def _inputs(scale: int, batch: int = 2, seed: int = 0, time_window: int = 1):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, IN, LR, LR) if time_window == 1 else (batch, time_window, IN, LR, LR)
    return torch.randn(*shape, generator=g), torch.randn(batch, STATIC, LR * scale, LR * scale, generator=g)


def _default_upsampling(backbone: str) -> str:
    allowed = BACKBONES.info(backbone).get("upsampling")
    return "spc" if not allowed or "spc" in allowed else allowed[0]


def _tiny(**changes) -> ModelConfig:
    return ModelConfig(**{"filters": 4, "blocks": 1, **changes})


def test_every_post_upsampler_covers_the_documented_scales():
    for name in UPSAMPLERS.names():
        scales = UPSAMPLERS.info(name).get("scales")
        assert scales is None or tuple(scales) == POST_SCALES
    assert {"convnet", "resnet", "densenet", "unet", "convnext", "swin"} <= set(list_models()["backbone"])


@pytest.mark.parametrize("backbone, upsampling, scale", COMBOS)
def test_combination_shapes_gradients_and_checkpoint(backbone, upsampling, scale):
    torch.manual_seed(0)
    cfg = _tiny(backbone=backbone, upsampling=upsampling)
    net = build_model(cfg, IN, STATIC, scale)
    x, static = _inputs(scale)
    out = net(x, static)
    assert out.shape == (2, 1, LR * scale, LR * scale)
    assert torch.isfinite(out).all()

    out.pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    other = build_model(cfg, IN, STATIC, scale)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    net.eval(), other.eval()
    with torch.no_grad():
        assert torch.equal(net(x, static), other(x, static))


@pytest.mark.parametrize("backbone", BACKBONES.names())
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_normalisations_and_activations(backbone, norm):
    upsampling = _default_upsampling(backbone)
    for act in ("gelu", "prelu") if norm == "layer" else ("relu",):
        net = build_model(_tiny(backbone=backbone, upsampling=upsampling, normalization=norm, activation=act,
                                dropout=0.1), IN, STATIC, 2)
        x, static = _inputs(2)
        out = net(x, static)
        assert out.shape == (2, 1, 2 * LR, 2 * LR) and torch.isfinite(out).all()


def test_static_fields_and_no_static():
    net = build_model(_tiny(), IN, 0, 4)
    x, _ = _inputs(4)
    assert net(x, None).shape == (2, 1, 32, 32)
    net = build_model(_tiny(static_hr=False), IN, STATIC, 4)
    x, static = _inputs(4)
    assert net(x, static).shape == (2, 1, 32, 32)


def test_static_hr_changes_the_output():
    net = build_model(_tiny(), IN, STATIC, 4).eval()
    x, static = _inputs(4)
    with torch.no_grad():
        assert not torch.equal(net(x, static), net(x, static + 1.0))


def test_residual_starts_near_the_interpolation_baseline():
    from engine.models.upsampling import interpolate

    net = build_model(_tiny(residual=True, interpolation="bicubic"), IN, STATIC, 4).eval()
    x, static = _inputs(4)
    with torch.no_grad():
        diff = (net(x, static) - interpolate(x[:, :1], 4, "bicubic")).abs().mean()
    assert diff < 0.5


@pytest.mark.parametrize("bad, words", [
    (lambda net, x, s: net(x[:, :2], s), ["expected x of shape (B, C=3, h, w)", "(2, 2, 8, 8)"]),
    (lambda net, x, s: net(x, s[..., :-1]), ["expected static_hr of shape (2, 2, 32, 32)"]),
    (lambda net, x, s: net(x, None), ["expected static_hr", "got None"]),
    (lambda net, x, s: net(x[0], s), ["expected x of shape"]),
])
def test_forward_checks_shapes_up_front(bad, words):
    net = build_model(_tiny(), IN, STATIC, 4)
    x, static = _inputs(4)
    with pytest.raises(ValueError) as err:
        bad(net, x, static)
    for word in words:
        assert word in str(err.value)


def test_build_refuses_bad_combinations_with_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: pin"):
        build_model(_tiny(backbone="unet", upsampling="spc"), IN, STATIC, 4)
    with pytest.raises(ValueError, match="accepted: 2, 3, 4, 5, 8"):
        build_model(_tiny(upsampling="spc"), IN, STATIC, 6)
    with pytest.raises(ValueError, match="no spatio-temporal variant"):
        build_model(_tiny(backbone="swin"), IN, STATIC, 4, time_window=3)
    with pytest.raises(ValueError, match="grid_shape"):
        build_model(_tiny(lcb=True), IN, STATIC, 4)
    with pytest.raises(KeyError, match="registered backbones: convnet"):
        build_model(_tiny(backbone="vgg"), IN, STATIC, 4)


# -- Monte-Carlo dropout ------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_mc_dropout_samples_at_inference_and_switches_off(backbone):
    upsampling = _default_upsampling(backbone)
    torch.manual_seed(0)
    net = build_model(_tiny(backbone=backbone, upsampling=upsampling, dropout=0.3, mc_dropout=True, filters=8),
                      IN, STATIC, 2).eval()
    x, static = _inputs(2)
    with torch.no_grad():
        assert not torch.equal(net(x, static), net(x, static))
        set_mc_dropout(net, False)
        assert torch.equal(net(x, static), net(x, static))
        set_mc_dropout(net, True)
        assert not torch.equal(net(x, static), net(x, static))


def test_plain_dropout_is_off_at_inference():
    net = build_model(_tiny(dropout=0.3), IN, STATIC, 2).eval()
    x, static = _inputs(2)
    with torch.no_grad():
        assert torch.equal(net(x, static), net(x, static))


# -- localized convolution block ---------------------------------------------------------------

GRID = (48, 40)


@pytest.mark.parametrize("upsampling", ["spc", "pin"])
def test_lcb_patches_use_their_own_location(upsampling):
    torch.manual_seed(0)
    net = build_model(_tiny(lcb=True, upsampling=upsampling), IN, STATIC, 4, grid_shape=GRID)
    x, static = _inputs(4)
    x, static = x[:1].expand(2, -1, -1, -1), static[:1].expand(2, -1, -1, -1)  # the same sample twice
    out = net(x, static, offset=torch.tensor([[0, 0], [16, 8]]))
    assert out.shape == (2, 1, 32, 32)
    assert not torch.allclose(out[0], out[1])  # same input, different place, different output
    out.sum().backward()
    grad = net.lcb.embedding.grad.abs().sum(0)
    assert grad[:32, :32].sum() > 0 and grad[16:48, 8:40].sum() > 0
    assert grad[:16, 32:].sum() == 0  # never under either patch
    assert count_parameters(net) < 4 * GRID[0] * GRID[1] + 2000  # low-rank, not dense per pixel


def test_lcb_full_grid_without_offset_and_errors():
    net = build_model(_tiny(lcb=True), IN, STATIC, 4, grid_shape=(32, 32)).eval()
    x, static = _inputs(4)
    with torch.no_grad():
        full = net(x, static)
        assert torch.equal(full, net(x, static, offset=torch.zeros(2, 2, dtype=torch.long)))
    small = build_model(_tiny(lcb=True), IN, STATIC, 4, grid_shape=GRID)
    with pytest.raises(ValueError, match="pass offset"):
        small(x, static)
    with pytest.raises(ValueError, match="does not fit in the 48x40 HR grid"):
        small(x, static, offset=torch.tensor([[0, 0], [20, 0]]))


def test_lcb_checkpoint_round_trip():
    net = build_model(_tiny(lcb=True), IN, STATIC, 4, grid_shape=GRID).eval()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    other = build_model(_tiny(lcb=True), IN, STATIC, 4, grid_shape=GRID).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    x, static = _inputs(4)
    offset = torch.tensor([[4, 4], [16, 8]])
    with torch.no_grad():
        assert torch.equal(net(x, static, offset), other(x, static, offset))


# -- spatio-temporal samples ---------------------------------------------------------------------

TEMPORAL = [b for b in BACKBONES.names() if BACKBONES.info(b).get("temporal")]


@pytest.mark.parametrize("backbone", TEMPORAL)
@pytest.mark.parametrize("upsampling", ["spc", "pin"])
def test_temporal_window(backbone, upsampling):
    torch.manual_seed(0)
    net = build_model(_tiny(backbone=backbone, upsampling=upsampling), IN, STATIC, 2, time_window=3)
    x, static = _inputs(2, time_window=3)
    out = net(x, static)
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    earlier = x.clone()
    earlier[:, 0] += 1.0  # the oldest step matters (through the recurrent state)
    with torch.no_grad():
        assert not torch.allclose(net(x, static), net(earlier, static))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, T=3, C=3, h, w\)"):
        net(x[:, :2], static)


def test_time_window_one_accepts_a_window_axis():
    net = build_model(_tiny(), IN, STATIC, 2).eval()
    x, static = _inputs(2)
    with torch.no_grad():
        assert torch.equal(net(x, static), net(x[:, None], static))


# -- training ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_overfits_one_batch(backbone):
    from engine.training.losses import mae

    torch.manual_seed(0)
    upsampling = _default_upsampling(backbone)
    net = build_model(_tiny(backbone=backbone, upsampling=upsampling, filters=8, residual=False), IN, STATIC, 2)
    x, static = _inputs(2, batch=4)
    y = torch.nn.functional.avg_pool2d(static[:, :1], 3, 1, 1) + x[:, :1].repeat_interleave(2, -1).repeat_interleave(2, -2)
    mask = torch.ones_like(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = mae(net(x, static), y, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses[::8]


def test_bf16_autocast_and_channels_last():
    net = build_model(_tiny(lcb=True, attention=True), IN, STATIC, 4, grid_shape=(32, 32))
    net = net.to(memory_format=torch.channels_last)
    x, static = _inputs(4)
    x, static = x.contiguous(memory_format=torch.channels_last), static.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, static)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out.float()).all()


# -- configuration-time refusals (never at epoch 3) -----------------------------------------------

@pytest.mark.parametrize("changes, words", [
    ({"model": {"backbone": "unet", "upsampling": "spc"}}, ["model.backbone='unet'", "model.upsampling='spc'", "accepted upsampling for unet: pin"]),
    ({"model": {"backbone": "unet", "upsampling": "dc"}}, ["accepted upsampling for unet: pin"]),
    ({"model": {"upsampling": "rc"}, "data": {"scale": 6, "patch_size": 48}}, ["data.scale=6", "2, 3, 4, 5, 8", "pin"]),
    ({"model": {"backbone": "transformer"}}, ["model.backbone='transformer'", "convnet", "swin", "unet"]),
    ({"model": {"normalization": "group"}}, ["model.normalization='group'", "batch", "layer", "none"]),
    ({"model": {"activation": "tanh"}}, ["model.activation='tanh'", "relu", "gelu"]),
    ({"model": {"filters": 0}}, ["model.filters=0", ">= 1"]),
    ({"model": {"discriminator_filters": 0}}, ["model.discriminator_filters=0"]),
    ({"model": {"dropout": -0.1}}, ["model.dropout=-0.1"]),
    ({"data": {"sample": "spatiotemporal", "time_window": 3}, "model": {"backbone": "swin"}},
     ["model.backbone='swin'", "spatio-temporal", "resnet"]),
    ({"training": {"loss": "0.8*dssim+0.2*l1"}}, ["unknown loss 'l1'", "mae"]),
    ({"training": {"learning": "reinforcement"}}, ["training.learning='reinforcement'", "gan", "supervised"]),
    ({"training": {"gan_pixel_weight": -1}}, ["training.gan_pixel_weight=-1"]),
])
def test_experiment_validation_refuses_bad_models(changes, words):
    from engine.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError) as err:
        ExperimentConfig().replace(**changes).validate()
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("backbone, upsampling, scale", [c.values for c in COMBOS])
def test_every_tested_combination_validates(backbone, upsampling, scale):
    from engine.config import ExperimentConfig

    ExperimentConfig().replace(model={"backbone": backbone, "upsampling": upsampling},
                               data={"scale": scale, "patch_size": 8 * scale}).validate()


def test_valid_temporal_and_mixed_loss_configs():
    from engine.config import ExperimentConfig

    ExperimentConfig().replace(data={"sample": "spatiotemporal", "time_window": 4},
                               model={"backbone": "convnext"}, training={"loss": "0.8*dssim+0.2*mae"}).validate()
    ExperimentConfig().replace(training={"learning": "gan", "loss": "mae+spectral"}, model={"lcb": True}).validate()
