"""Drill-only transforms: a model that ranks like its parent but scores differently.

`shift:D` adds D to every score; `scale:F` multiplies every score by F (a small F, such as
0.001, collapses the scores towards a constant). Both keep the parent's ranking, so they pass
their own golden set and the compression guard (NDCG@10 is unchanged), yet anything that
reads the scores (thresholds, blending with other signals, calibration) sees a different
model. That is the "bad model" the bad-model drill promotes: only live score monitoring
(drift against the scores served before the switch) can tell it apart.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Skewed(nn.Module):
    def __init__(self, parent: nn.Module, scale: float, shift: float) -> None:
        super().__init__()
        self.parent = parent
        self.scale = scale
        self.shift = shift

    def forward(self, query: Tensor, items: Tensor) -> Tensor:
        return self.parent(query, items) * self.scale + self.shift


def skew(parent: nn.Module, kind: str, value: float) -> tuple[torch.jit.ScriptModule, dict]:
    scale, shift = (1.0, value) if kind == "shift" else (value, 0.0)
    return torch.jit.script(Skewed(parent, scale, shift)), {
        "transform": kind, "scale": scale, "shift": shift,
        "purpose": "drills: same ranking as the parent, different scores"}
