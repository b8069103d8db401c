"""int8 quantisation for CPU serving: static (the default) and dynamic (torch.ao).

Why two: torch.ao's *dynamic* quantisation picks each forward pass's activation scale from
that pass's whole input tensor. rankd batches concurrent requests into one pass, so with
it a request's scores would depend on which requests it was batched with (measured: 4.6% on
one golden score). rankd therefore runs each request of a dynamic model alone, which costs
it the batching that makes serving fast.

*Static* quantisation fixes every activation scale at export time, calibrated on training-
distribution queries (never eval.json's), so a row's score depends on that row alone:
batching changes nothing and rankd batches as usual. Linear+ReLU pairs are fused and run
on fbgemm/x86 int8 kernels end to end; only the final score is dequantised.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from export import BundleError, MODEL_FILE, first_line, load_user_model, log

CALIBRATION_BATCHES = 64
CALIBRATION_SHAPE = (64, 64)  # queries x candidates per calibration batch


def select_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("x86", "fbgemm") if e in engines), None)
    if engine is None:
        raise BundleError(f"this torch build has no x86/fbgemm quantized engine (has {engines}); int8 needs one")
    torch.backends.quantized.engine = engine
    return engine


class StaticInt8Ranker(nn.Module):
    """MlpRanker's forward with the MLP between a quantise and a dequantise stub."""

    def __init__(self, mlp: nn.Sequential) -> None:
        super().__init__()
        from torch.ao import quantization as tq  # noqa: PLC0415

        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()
        self.mlp = mlp

    def forward(self, query: Tensor, items: Tensor) -> Tensor:
        q = query.unsqueeze(1).expand(-1, items.size(1), -1)
        x = self.quant(torch.cat([q, items], dim=-1))
        return self.dequant(self.mlp(x)).squeeze(-1)


def ao_quantization():
    """torch.ao.quantization, with its deprecation warning silenced: torchao, its successor,
    cannot emit TorchScript, the only format libtorch in rankd loads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from torch.ao import quantization as tq  # noqa: PLC0415
    return tq


def int8_static(eager: nn.Module | None, items: Tensor, sample_queries: Callable[[int], Tensor],
                rng: np.random.Generator) -> tuple[torch.jit.ScriptModule, dict]:
    if eager is None or not hasattr(eager, "mlp"):
        raise BundleError("int8 (static) needs a model the exporter can rebuild (an export.py MlpRanker); "
                          "use --method int8-dynamic for other TorchScript models")
    engine = select_engine()
    tq = ao_quantization()
    # Quantized CPU kernels resize their outputs, which torch's determinism check flags
    # (they are deterministic on the CPU); compress.py runs this method with warn_only.
    warnings.filterwarnings("ignore", r".*does not have a deterministic implementation")
    layers = list(eager.mlp)
    fuse = [[str(i), str(i + 1)] for i in range(len(layers) - 1)
            if isinstance(layers[i], nn.Linear) and isinstance(layers[i + 1], nn.ReLU)]
    model = StaticInt8Ranker(eager.mlp).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if fuse:
            tq.fuse_modules(model.mlp, fuse, inplace=True)
        model.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(model, inplace=True)
        n_queries, n_items = CALIBRATION_SHAPE
        log(f"calibrating int8 activation ranges on {CALIBRATION_BATCHES} x {n_queries} x {n_items} training lists")
        with torch.no_grad():
            for _ in range(CALIBRATION_BATCHES):
                ids = torch.from_numpy(rng.integers(0, items.shape[0], size=(n_queries, n_items)))
                model(sample_queries(n_queries), items[ids])
        tq.convert(model, inplace=True)
        scripted = torch.jit.script(model)
    return scripted, {"scheme": "static", "weights": "int8 per output channel", "activations": "int8, calibrated",
                      "fused": [f"mlp.{a}+mlp.{b}" for a, b in fuse], "engine": engine,
                      "calibration": f"{CALIBRATION_BATCHES} batches of {n_queries} x {n_items}"}


def int8_dynamic(eager: nn.Module | None, parent_dir) -> tuple[torch.jit.ScriptModule, dict]:
    engine = select_engine()
    tq = ao_quantization()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # quantize_dynamic_jit also touches .grad of non-leaf tensors internally, which warns.
        warnings.filterwarnings("ignore", r"The \.grad attribute of a Tensor that is not a leaf", UserWarning)
        if eager is not None:
            quantized = tq.quantize_dynamic(eager, {nn.Linear}, dtype=torch.qint8)
            return torch.jit.script(quantized), {
                "scheme": "dynamic", "layers": "nn.Linear", "activations": "int8, scale per forward pass",
                "engine": engine, "route": "eager MlpRanker rebuilt from the parent's weights"}
        try:
            quantized = tq.quantize_dynamic_jit(load_user_model(parent_dir / MODEL_FILE), {"": tq.default_dynamic_qconfig})
        except Exception as exc:
            raise BundleError(
                f"int8-dynamic: the parent is not an export.py MlpRanker and TorchScript dynamic quantisation failed on it: {first_line(exc)}"
            ) from exc
    return quantized, {"scheme": "dynamic", "layers": "aten::linear", "activations": "int8, scale per forward pass",
                       "engine": engine, "route": "quantize_dynamic_jit on the parent's TorchScript"}
