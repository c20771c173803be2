"""Spatio-temporal samples: a recurrent-convolutional encoder (ConvGRU) that reads a window of T
consecutive LR steps and hands the spatial backbone its final state, so the HR target at the last
step can use the recent evolution of the field (DL4DS uses ConvLSTM blocks for the same purpose)."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import activation, conv3x3


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell: (B, C, h, w), state (B, F, h, w) -> new state (B, F, h, w)."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.gates = conv3x3(in_channels + hidden, 2 * hidden)
        self.candidate = conv3x3(in_channels + hidden, hidden)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        update, reset = torch.sigmoid(self.gates(torch.cat([x, state], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * state], dim=1)))
        return (1 - update) * state + update * candidate


class TemporalEncoder(nn.Module):
    """(B, T, C, h, w) -> (B, F + C, h, w): the ConvGRU state after the last step, concatenated
    with the last step's raw input (so the backbone sees the present directly).

    A shared conv stem embeds every step (the T steps are folded into the batch for it).
    """

    def __init__(self, in_channels: int, hidden: int, act: str = "relu"):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, hidden), activation(act))
        self.cell = ConvGRUCell(hidden, hidden)
        self.out_channels = hidden + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        steps = self.stem(x.reshape(b * t, c, h, w)).reshape(b, t, -1, h, w)
        state = torch.zeros_like(steps[:, 0])
        for i in range(t):
            state = self.cell(steps[:, i], state)
        return torch.cat([state, x[:, -1]], dim=1)
