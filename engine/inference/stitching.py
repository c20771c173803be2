"""Patch stitching: inference over a domain of any size by overlapping tiles, blended smoothly.

A patch-trained network is applied to tiles of ``tile`` x ``tile`` HR pixels whose neighbours
overlap by ``overlap`` pixels; each tile's output is weighted by a window and the weighted sum is
divided by the summed weights. The window of a tile is, along each axis (and only on the sides
that face another tile, never at the domain border):

- 0 over the first ``halo`` pixels, where the tile's own zero padding reaches its output
  (``halo`` = the network's receptive-field radius makes tiling exact for a translation-
  equivariant network, see :func:`receptive_field`);
- a raised-cosine (sin^2) ramp up to 1 over the rest of the overlap, less another ``halo``;
- 1 elsewhere.

So neighbouring tiles cross-fade inside their overlap (no seam) and every pixel is predicted by at
least one tile that saw its whole neighbourhood when ``overlap >= 2 * halo``. Tiles are processed
``tile_batch`` at a time, so the network's activation memory is bounded by the tile batch, not the
domain; only the output and its weight sum are domain-sized.

The same machinery serves deterministic models (:func:`predict_tiled`) and diffusion models (the
sampler blends the denoiser's noise prediction tile by tile at every step, so one coherent sample
covers the domain; see :mod:`engine.models.diffusion`).

Example
-------
>>> net = build_model(ModelConfig(filters=4, blocks=1), 3, 2, 4)                  # doctest: +SKIP
>>> y = predict_tiled(net, x, static_hr, scale=4, tile=32, overlap=16)            # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


class StitchingError(ValueError):
    """Tiles that cannot work: smaller than the receptive field, overlap too small or too large,
    not aligned with the LR grid. The message names the bad value and the accepted ones."""


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start indices of tiles of length ``tile`` covering ``0 .. size`` with stride ``tile - overlap``;
    the last tile is moved back to end exactly at ``size`` (so it may overlap its neighbour more).

    >>> tile_starts(10, 4, 2)
    [0, 2, 4, 6]
    >>> tile_starts(9, 4, 1)
    [0, 3, 5]
    """
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def window_1d(length: int, overlap: int, halo: int, left: bool, right: bool) -> torch.Tensor:
    """Blending weights (length,) of one tile along one axis; ``left`` / ``right`` say whether that
    side faces another tile (True) or the domain border (False, weight 1 up to the edge)."""
    w = torch.ones(length, dtype=torch.float64)
    ramp_len = max(overlap - 2 * halo, 0)
    i = torch.arange(ramp_len, dtype=torch.float64)
    # sin^2 ramp: smooth (zero slope at both ends), strictly positive from the first ramp pixel.
    ramp = torch.sin(0.5 * math.pi * (i + 0.5) / max(ramp_len, 1)) ** 2
    edge = torch.cat([torch.zeros(halo, dtype=torch.float64), ramp])[:length]
    if left:
        w[: edge.numel()] = torch.minimum(w[: edge.numel()], edge)
    if right:
        w[length - edge.numel():] = torch.minimum(w[length - edge.numel():], edge.flip(0))
    return w


def _check_tiles(H: int, W: int, tile: int, overlap: int, halo: int, scale: int, receptive: int | None) -> None:
    for name, value in (("tile", tile), ("overlap", overlap), ("halo", halo)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StitchingError(f"{name}={value!r} is not valid; expected an integer >= 0")
    if tile < 1 or tile % scale:
        raise StitchingError(f"tile={tile} is not valid; accepted: a positive multiple of the scale {scale} "
                             f"(tiles start on LR cells), e.g. {scale * max(1, tile // scale)}")
    if overlap % scale:
        raise StitchingError(f"overlap={overlap} is not a multiple of the scale {scale}; accepted: multiples of {scale}")
    tiled = tile < max(H, W)
    if tiled and overlap >= tile:
        raise StitchingError(f"overlap={overlap} must be smaller than tile={tile}; accepted: 0 <= overlap < tile")
    if tiled and overlap < 2 * halo:
        raise StitchingError(f"overlap={overlap} is smaller than twice the halo={halo}: pixels near tile edges would "
                             f"get no weight; accepted: overlap >= {2 * halo} (or a smaller halo)")
    if receptive is not None and tiled and tile < min(receptive, max(H, W)):
        raise StitchingError(
            f"tile={tile} HR pixels is smaller than the model's receptive field ({receptive} HR pixels): no pixel of "
            f"a tile would see its whole neighbourhood; accepted: tile >= {receptive} (multiple of {scale}), "
            f"or tile >= {max(H, W)} for the whole domain at once")


def tiled_apply(fn: Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], torch.Tensor],
                lr: Sequence[torch.Tensor], hr: Sequence[torch.Tensor], *, scale: int, tile: int, overlap: int,
                halo: int = 0, tile_batch: int = 16, offset: torch.Tensor | None = None,
                receptive: int | None = None, hr_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of the inputs and blend the tile outputs.

    Parameters
    ----------
    fn : callable(lr_tiles, hr_tiles, offset) -> (N, C_out, t, t)
        ``lr_tiles`` are the ``lr`` tensors cut to tiles, (N, ..., t/scale, t/scale); ``hr_tiles``
        the ``hr`` tensors, (N, ..., t, t); ``offset`` (N, 2) long: HR (row, col) of each tile's
        top-left pixel in the full grid (plus the caller's ``offset``). N <= ``tile_batch``.
    lr : tensors (B, ..., h, w) on the LR grid (e.g. ``x``; also (B, T, C, h, w)).
    hr : tensors (B, ..., H, W) on the HR grid (``static_hr``, a noisy diffusion state, ...);
        ``H = h * scale``.
    scale : HR / LR ratio (1 when every input is on the HR grid).
    tile, overlap, halo : HR pixels (``tile`` and ``overlap`` multiples of ``scale``); see the module
        docstring. A tile larger than the domain is clipped to it.
    tile_batch : tiles per call of ``fn`` (bounds the activation memory).
    offset : (B, 2) long, optional: where the inputs sit in a larger grid (LCB models).
    receptive : the network's receptive field in HR pixels; tiles smaller than it are refused.
    hr_shape : (H, W) when ``hr`` is empty.

    Returns
    -------
    (B, C_out, H, W) float32
    """
    if not lr and not hr:
        raise StitchingError("tiled_apply needs at least one input tensor")
    B = (lr[0] if lr else hr[0]).shape[0]
    if hr:
        H, W = hr[0].shape[-2:]
    elif hr_shape is not None:
        H, W = hr_shape
    else:
        H, W = lr[0].shape[-2] * scale, lr[0].shape[-1] * scale
    for t in lr:
        if (t.shape[0], t.shape[-2] * scale, t.shape[-1] * scale) != (B, H, W):
            raise StitchingError(f"expected LR inputs of shape (B={B}, ..., {H // scale}, {W // scale}), got {tuple(t.shape)}")
    for t in hr:
        if (t.shape[0], t.shape[-2], t.shape[-1]) != (B, H, W):
            raise StitchingError(f"expected HR inputs of shape (B={B}, ..., {H}, {W}), got {tuple(t.shape)}")
    _check_tiles(H, W, tile, overlap, halo, scale, receptive)
    if tile_batch < 1:
        raise StitchingError(f"tile_batch={tile_batch!r} is not valid; expected an integer >= 1")
    th, tw = min(tile, H), min(tile, W)
    rows, cols = tile_starts(H, th, overlap), tile_starts(W, tw, overlap)
    device = (lr[0] if lr else hr[0]).device
    base = torch.zeros(B, 2, dtype=torch.long, device=device) if offset is None else offset.to(device).long()

    # (sample, row, col) jobs, processed tile_batch at a time.
    jobs = [(b, r, c) for b in range(B) for r in rows for c in cols]
    out = weight = None
    windows: dict[tuple[int, int], torch.Tensor] = {}
    for start in range(0, len(jobs), tile_batch):
        chunk = jobs[start : start + tile_batch]
        lr_tiles = [torch.stack([t[b, ..., r // scale : (r + th) // scale, c // scale : (c + tw) // scale]
                                 for b, r, c in chunk]) for t in lr]
        hr_tiles = [torch.stack([t[b, ..., r : r + th, c : c + tw] for b, r, c in chunk]) for t in hr]
        off = torch.stack([base[b] + torch.tensor([r, c], device=device) for b, r, c in chunk])
        pred = fn(lr_tiles, hr_tiles, off)
        if pred.ndim != 4 or pred.shape[0] != len(chunk) or tuple(pred.shape[-2:]) != (th, tw):
            raise StitchingError(f"the tile function returned {tuple(pred.shape)}; expected ({len(chunk)}, C, {th}, {tw})")
        pred = pred.float()
        if out is None:
            out = torch.zeros(B, pred.shape[1], H, W, device=device)
            weight = torch.zeros(B, 1, H, W, device=device)
        for k, (b, r, c) in enumerate(chunk):
            key = (r, c)
            if key not in windows:
                wy = window_1d(th, overlap, halo, left=r > 0, right=r + th < H)
                wx = window_1d(tw, overlap, halo, left=c > 0, right=c + tw < W)
                windows[key] = (wy[:, None] * wx[None, :]).float().to(device)
            w = windows[key]
            out[b, :, r : r + th, c : c + tw] += pred[k] * w
            weight[b, :, r : r + th, c : c + tw] += w
    if bool((weight <= 0).any()):  # cannot happen when overlap >= 2 * halo (checked above)
        raise StitchingError(f"some pixels got no tile weight (tile={tile}, overlap={overlap}, halo={halo})")
    return out / weight


def receptive_field(model: nn.Module, in_channels: int, static_channels: int, scale: int,
                    time_window: int = 1, max_lr: int = 128, trials: int = 2) -> int:
    """The receptive field of a zoo-style model, in HR pixels (odd: ``2 * radius + 1``).

    Measured, not derived: the support of the gradient of one central output pixel with respect to
    the LR input and the HR static fields, on random inputs (a few trials, so that a dead ReLU
    does not hide a path). The probe grows until the support no longer reaches its border;
    ``max_lr`` LR pixels is the limit (a global operation such as attention hits it and then the
    whole probe counts as the receptive field).

    Parameters
    ----------
    model : forward(x, static_hr, offset) -> (B, 1, H, W)
    in_channels, static_channels, scale, time_window : as for :func:`engine.models.build_model`.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        size = 16
        while True:
            radius = 0
            for trial in range(trials):
                g = torch.Generator().manual_seed(trial)
                shape = (1, in_channels, size, size) if time_window == 1 else (1, time_window, in_channels, size, size)
                x = torch.randn(*shape, generator=g).to(device).requires_grad_(True)
                static = torch.randn(1, static_channels, size * scale, size * scale, generator=g).to(device)
                static.requires_grad_(static_channels > 0)
                out = model(x, static if static_channels else None, torch.zeros(1, 2, dtype=torch.long, device=device))
                c = out.shape[-1] // 2
                out[0, 0, c, c].backward()
                gx = x.grad.abs().flatten(0, -3).sum(0)  # (size, size) LR
                ys, xs = torch.nonzero(gx > 0, as_tuple=True)
                if ys.numel():
                    # LR cell j covers HR pixels j*scale .. (j+1)*scale-1; distance to the centre pixel c
                    lo = torch.minimum(ys, xs).min().item() * scale
                    hi = (torch.maximum(ys, xs).max().item() + 1) * scale - 1
                    radius = max(radius, c - lo, hi - c)
                if static_channels:
                    gs = static.grad.abs().sum((0, 1))
                    ys, xs = torch.nonzero(gs > 0, as_tuple=True)
                    if ys.numel():
                        radius = max(radius, c - min(ys.min().item(), xs.min().item()),
                                     max(ys.max().item(), xs.max().item()) - c)
            if radius < c - scale or size >= max_lr:
                return 2 * int(radius) + 1
            size *= 2
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_tiled(model: nn.Module, x: torch.Tensor, static_hr: torch.Tensor | None, *, scale: int, tile: int,
                  overlap: int, halo: int | None = None, tile_batch: int = 16, offset: torch.Tensor | None = None,
                  receptive: int | None = None) -> torch.Tensor:
    """Tiled prediction of a zoo model (``forward(x, static_hr, offset) -> (B, 1, H, W)``).

    Parameters
    ----------
    x : (B, C_in, h, w) or (B, T, C_in, h, w)
    static_hr : (B, S, H, W) or None
    scale, tile, overlap, tile_batch, offset : see :func:`tiled_apply`.
    halo : pixels trimmed at inner tile edges; default ``min(radius, overlap // 4)`` with the
        measured receptive-field radius (exact tiling when ``overlap >= 4 * radius``, a smooth
        cross-fade in any case).
    receptive : receptive field in HR pixels; measured with :func:`receptive_field` when None.

    Returns
    -------
    (B, 1, H, W)
    """
    static_channels = 0 if static_hr is None else static_hr.shape[1]
    in_channels = x.shape[-3]
    time_window = x.shape[1] if x.ndim == 5 else 1
    if receptive is None:
        with torch.enable_grad():
            receptive = receptive_field(model, in_channels, static_channels, scale, time_window)
    if halo is None:
        halo = min(receptive // 2, overlap // 4)

    def fn(lr_tiles, hr_tiles, off):
        return model(lr_tiles[0], hr_tiles[0] if hr_tiles else None, off)

    return tiled_apply(fn, [x], [static_hr] if static_hr is not None else [], scale=scale, tile=tile,
                       overlap=overlap, halo=halo, tile_batch=tile_batch, offset=offset, receptive=receptive)
