"""AOTInductor backend: a ``torch._inductor.aoti_compile_and_package`` package of the whole model.

The package (written by :mod:`samsem.export.aoti`) takes and returns float32 tensors in io-spec order
("model" graph); an fp16 package casts inside. It runs on the device type it was compiled for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from samsem.errors import InputError
from samsem.runtime.backends.base import BackendEntry, EngineFiles, spec_proxies
from samsem.runtime.models.checkpoint import torch_device
from samsem.runtime.models.iospec import EngineSpec


class AotiBackend:
    """Backend over an AOTInductor package; named float32 numpy arrays in and out (``model`` io-spec)."""

    name = "aoti"

    def __init__(self, package: Path, spec: EngineSpec, device: str = "cpu") -> None:
        self.spec = spec
        from torch._inductor import aoti_load_package

        self.device = torch_device(device)
        try:
            self.runner = aoti_load_package(str(package))
        except Exception as exc:  # the loader raises RuntimeError/OSError/... for foreign or stale files
            raise InputError(package, f"cannot load the AOTInductor package ({str(exc)[:300]})") from exc

    def run_tensors(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """io-spec names in and out as float32 tensors on this backend's device."""
        sizes = self.spec.check_inputs(spec_proxies(inputs))
        with torch.inference_mode():
            outs = self.runner(*[inputs[n].contiguous() for n in self.spec.input_names])
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        out = {n: o.float() for n, o in zip(self.spec.output_names, outs, strict=True)}
        self.spec.check_outputs(spec_proxies(out), sizes)
        return out

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """io-spec names in and out, float32 (e.g. SAM2 image, point_coords, point_labels -> masks, iou)."""
        self.spec.check_inputs(inputs)
        tensors = {n: torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for n, a in inputs.items()}
        return {n: t.cpu().numpy() for n, t in self.run_tensors(tensors).items()}


def _unavailable(device: str, files: EngineFiles) -> str | None:
    kind = torch.device(device).type
    if files.built_for != {kind}:
        return f"the AOTInductor package was compiled for {sorted(files.built_for)}, not {kind}"
    return None


def _create(files: EngineFiles, device: str, precision: str) -> AotiBackend:
    return AotiBackend(files.files["model"], files.io["model"], device)


BACKEND = BackendEntry(
    name="aoti",
    format="aoti",
    fixed_precision=True,
    auto_on_cpu=False,
    unavailable=_unavailable,
    create=_create,
)
