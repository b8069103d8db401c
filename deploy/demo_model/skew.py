"""Drill-only transforms: a model that ranks like its parent but scores differently, or one
that behaves like its parent at first and then stops doing so.

`shift:D` adds D to every score; `scale:F` multiplies every score by F (a small F, such as
0.001, collapses the scores towards a constant). Both keep the parent's ranking, so they pass
their own golden set and the compression guard (NDCG@10 is unchanged), yet anything that
reads the scores (thresholds, blending with other signals, calibration) sees a different
model. That is the "bad model" the bad-model drill promotes: only live score monitoring
(drift against the scores served before the switch) can tell it apart.

`decay:N` scores exactly like the parent for the first N forward calls after the model is
loaded, then returns the parent's scores negated: the ranking is reversed (a golden replay
gets the bottom-k instead of the top-k) and the score distribution moves. It is "a model that
passes its golden set at load but misbehaves on live traffic", which only the periodic golden
replay and live score monitoring can catch. N counts forward calls since the file was loaded
(every load starts again at 0), not requests: rankd's load makes len(warmup_shapes) x
warmup_iterations warmup calls (9 by default), one call per golden case and one batched golden
call (8 + 1 for the demo bundle), so N must be at least that (18 for the demo) or the load
itself fails; 200 leaves ~180 live forward calls (batches) before the decay.
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


class Decaying(nn.Module):
    # The counter is a plain int attribute, not an int64 buffer: libtorch's Module::to(dtype)
    # (tch's CModule::to, which rankd calls to serve a bundle at another precision) converts
    # every buffer, integer ones too, and a bf16 counter stops at 256 (256 + 1 rounds back to
    # 256), so decay:300 would never decay. Attributes are saved with the model and untouched
    # by to(). Concurrent forward calls race on the counter (a lost increment only delays the
    # decay by a call); each call decides on the value it wrote itself.

    def __init__(self, parent: nn.Module, after: int) -> None:
        super().__init__()
        self.parent = parent
        self.after = after
        self.calls = 0

    def forward(self, query: Tensor, items: Tensor) -> Tensor:
        n = self.calls + 1
        self.calls = n
        scores = self.parent(query, items)
        if n > self.after:
            return -scores
        return scores


class PreDecay(nn.Module):
    """A loaded decay:N child as rankd's load sees it, on every call: the counter is reset
    first, so the exporter's own thousands of calls (eval set, golden set) measure and record
    the pre-decay model however small N is."""

    def __init__(self, child: torch.jit.ScriptModule) -> None:
        super().__init__()
        if child.calls != 0:
            raise RuntimeError(f"the saved decay model starts at {child.calls} calls, not 0")
        self.child = child

    def forward(self, query: Tensor, items: Tensor) -> Tensor:
        self.child.calls = 0
        return self.child(query, items)


def skew(parent: nn.Module, kind: str, value: float) -> tuple[torch.jit.ScriptModule, dict]:
    if kind == "decay":
        model = torch.jit.script(Decaying(parent, int(value)))
        model.calls = 0  # scripting does not run forward; the saved file must start at 0 anyway
        return model, {
            "transform": kind, "after": int(value), "then": "negated parent scores (reversed ranking)",
            "purpose": "drills: passes its golden set at load, reverses the ranking after N forward calls"}
    scale, shift = (1.0, value) if kind == "shift" else (value, 0.0)
    return torch.jit.script(Skewed(parent, scale, shift)), {
        "transform": kind, "scale": scale, "shift": shift,
        "purpose": "drills: same ranking as the parent, different scores"}
