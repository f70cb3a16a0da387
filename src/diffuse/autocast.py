"""A network run in a precision: bf16 or fp16 autocast around its forward pass, float32 out.

Training (:mod:`diffuse.train.precision`) and sampling (:class:`diffuse.sample.Stage`)
both run the network this way: the weights stay float32, autocast runs the convolutions
and matrix products in the low precision (each GroupNorm keeps float32 statistics, see
:mod:`diffuse.nn.layers`), and the output is cast back to float32, so that the losses'
logs and exps and the samplers' updates are never computed in half precision.
"""

from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("fp32", *DTYPES)


class AutocastModel:
    """Call ``model`` under autocast to ``dtype`` on ``device_type``; return float32.

    model:       the network (or its DistributedDataParallel wrapper, or a guidance wrapper).
    dtype:       the autocast dtype, or None for plain float32.
    device_type: "cpu" or "cuda".
    """

    def __init__(self, model, dtype: torch.dtype | None, device_type: str) -> None:
        self.model = model
        self.dtype = dtype
        self.device_type = device_type

    @classmethod
    def named(cls, model, precision: str, device: torch.device) -> AutocastModel:
        """``model`` running in ``precision`` ("fp32", "bf16" or "fp16") on ``device``."""
        return cls(model, DTYPES.get(precision), device.type)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if self.dtype is None:
            return self.model(*args, **kwargs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(*args, **kwargs)
        return out.float()
