"""`samsem export` end to end (export -> bundle -> `samsem segment --model BUNDLE`), the ONNX graphs,
the LayerNorm2d swap and the TensorRT FP32-layer policy on the names of a real export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from samsem.cli import main
from samsem.export.onnx_export import check_onnx, export_onnx
from samsem.export.trt_build import Layer, fp32_layers
from samsem.io import read_mask, write_image
from samsem.runtime.bundle import manifest as rb
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import get_family, save_model
from samsem.runtime.models.sam2 import ChannelLayerNorm, swap_layernorm2d
from samsem.synth.generate import generate_sample

S = 64

# how TensorRT's ONNX parser turns the ops of these graphs into layer types (for the policy test)
TRT_KIND = {
    "LayerNormalization": "NORMALIZATION",
    "Softmax": "SOFTMAX",
    "ReduceMean": "REDUCE",
    "ReduceSum": "REDUCE",
    "MatMul": "MATRIX_MULTIPLY",
    "Gemm": "MATRIX_MULTIPLY",
    "Conv": "CONVOLUTION",
    "ConvTranspose": "DECONVOLUTION",
    "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION",
    **{op: "ELEMENTWISE" for op in ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Greater", "Less", "Mod")},
    **{op: "UNARY" for op in ("Sqrt", "Erf", "Sin", "Cos", "Neg", "Exp")},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A tiny samsem checkpoint, its bundle written by the CLI, and two synthetic images."""
    folder = tmp_path_factory.mktemp("export")
    spec = sm.tiny_spec(S)
    ckpt = folder / "tiny.pt"
    save_model(ckpt, sm.build(spec, seed=5), spec)
    out = folder / "bundle"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--formats", "onnx,torch"]) == 0
    images = folder / "images"
    for i, (h, w) in enumerate([(280, 360), (200, 240)]):
        write_image(images / f"sem{i}.png", generate_sample("easy", h, w, seed=10 + i).image)
    return {"ckpt": ckpt, "bundle": out, "images": images, "folder": folder}


def test_segment_with_bundle_onnxruntime_equals_torch(exported, capsys) -> None:
    masks = {}
    for backend in ("onnxruntime", "torch", "auto"):
        out = exported["folder"] / f"out-{backend}"
        args = ["segment", str(exported["images"]), "-o", str(out), "--model", str(exported["bundle"])]
        assert main([*args, "--backend", backend]) == 0
        err = capsys.readouterr().err
        picked = "onnxruntime" if backend == "auto" else backend
        assert f"model sam2 on backend {picked}" in err and "2 segmented" in err
        masks[backend] = [read_mask(out / f"sem{i}.mask.png") for i in range(2)]
        report = json.loads((out / "sem0.report.json").read_text())
        assert report["model"]["source"] == str(exported["bundle"])
        assert report["model"]["checkpoint_sha256"] == [rb.sha256_file(exported["ckpt"])]
    for a, b, c in zip(masks["onnxruntime"], masks["torch"], masks["auto"], strict=True):
        assert 0.0 < b.mean() < 1.0
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, a)


def test_corrupted_bundle_is_a_clear_cli_error(exported, tmp_path, capsys) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(exported["bundle"], bad)
    with open(bad / "model1/decoder.onnx", "ab") as fh:
        fh.write(b"\0")
    args = ["segment", str(exported["images"]), "-o", str(tmp_path / "o"), "--model", str(bad)]
    assert main(args) == 2
    assert "decoder.onnx: bundle file was altered" in capsys.readouterr().err


def test_onnx_graphs_are_valid_with_dynamic_batch_and_points(exported) -> None:
    io = sm.geometry(sm.tiny_spec(S)).engines()
    for graph in ("encoder", "decoder"):
        path = exported["bundle"] / f"model1/{graph}.onnx"
        assert check_onnx(path, io[graph]) == 17
        model = onnx.load(str(path))
        dims = {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)
        }
        assert all(d[0] == "batch" for d in dims.values())
    assert dims["point_coords"] == ["batch", "points", 2] and dims["masks"] == ["batch", 3, 16, 16]


def test_official_checkpoint_needs_config(exported, tmp_path, capsys) -> None:
    official = tmp_path / "official.pt"
    torch.save({"model": torch.load(exported["ckpt"], weights_only=True)["model"]}, official)
    assert main(["export", "--checkpoint", str(official), "--out", str(tmp_path / "b")]) == 2
    assert "official checkpoints do not name their config" in capsys.readouterr().err
    args = [
        "export",
        "--checkpoint",
        str(official),
        "--config",
        "sam2.1_hiera_t",
        "--out",
        str(tmp_path / "b"),
    ]
    assert (
        main([*args, "--formats", "torch", "--image-size", "64"]) == 2
    )  # the tiny weights do not fit hiera_t
    assert "weights do not fit SAM2 config" in capsys.readouterr().err


def test_channel_layernorm_equals_layernorm2d() -> None:
    from sam2.modeling.sam2_utils import LayerNorm2d

    ref = LayerNorm2d(6)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    x = torch.randn(2, 6, 5, 7) * 30 + 4
    swapped = ChannelLayerNorm(ref.weight, ref.bias, ref.eps)
    torch.testing.assert_close(swapped(x), ref(x), rtol=1e-5, atol=1e-5)
    model = sm.SAM2ImageModel(sm.build(sm.tiny_spec(S), seed=0))
    image = torch.randn(1, 3, S, S)
    coords, labels = torch.rand(1, 2, 2) * S, torch.ones(1, 2)
    with torch.no_grad():
        before = model(image, coords, labels)
        assert swap_layernorm2d(model) >= 1
        after = model(image, coords, labels)
    assert not any(isinstance(m, LayerNorm2d) for m in model.modules())
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _layers(path: Path) -> list[Layer]:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    types |= {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
    floating = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return [
        Layer(n.name, TRT_KIND.get(n.op_type, "OTHER"), types.get(n.output[0]) in floating)
        for n in model.graph.node
    ]


def test_fp32_policy_on_exported_names(exported) -> None:
    enc = _layers(exported["bundle"] / "model1/encoder.onnx")
    dec = _layers(exported["bundle"] / "model1/decoder.onnx")
    for layers in (enc, dec):
        pinned = set(fp32_layers(layers))
        norms = [la.name for la in layers if la.kind in ("NORMALIZATION", "SOFTMAX")]
        assert norms and set(norms) <= pinned
        assert not any(la.kind in ("CONVOLUTION", "DECONVOLUTION") for la in layers if la.name in pinned)
    pinned = set(fp32_layers(enc))
    attn = "/image_encoder/trunk/blocks.0/attn"
    assert {f"{attn}/MatMul", f"{attn}/MatMul_1", f"{attn}/Softmax"} <= pinned  # q @ k^T, softmax, @ v
    for proj in (
        f"{attn}/qkv/MatMul",
        f"{attn}/proj/MatMul",
        "/image_encoder/trunk/blocks.0/mlp/layers.0/MatMul",
    ):
        assert proj not in pinned
    # the swapped LayerNorm2d of the mask decoder is one LayerNormalization, no ReduceMean/Pow chain left
    assert not [la for la in dec if la.kind == "REDUCE"]
    assert "/sam_mask_decoder/output_upscaling.1/LayerNormalization" in fp32_layers(dec)
    share = len(fp32_layers(enc)) / sum(la.floating for la in enc)
    assert share < 0.5  # most float layers stay FP16


def test_fp32_policy_rules() -> None:
    layers = [
        Layer("/blk/attn/qkv/MatMul", "MATRIX_MULTIPLY", True),
        Layer("/blk/attn/MatMul", "MATRIX_MULTIPLY", True),
        Layer("/blk/attn/Mul", "ELEMENTWISE", True),
        Layer("/blk/attn/Softmax", "SOFTMAX", True),
        Layer("/blk/attn/Gather", "GATHER", True),
        Layer("/blk/attn/Shape_Mul", "ELEMENTWISE", False),  # an int shape computation stays untouched
        Layer("/ln2d/ReduceMean", "REDUCE", True),
        Layer("/ln2d/Pow", "ELEMENTWISE", True),
        Layer("/ln2d/Conv", "CONVOLUTION", True),
        Layer("/norm/LayerNormalization", "NORMALIZATION", True),
        Layer("/norm/Add", "ELEMENTWISE", True),  # a normalization does not pull its scope along
        Layer("node_softmax", "SOFTMAX", True),  # names without a scope: by type only
        Layer("node_matmul", "MATRIX_MULTIPLY", True),
    ]
    assert fp32_layers(layers) == [
        "/blk/attn/MatMul",
        "/blk/attn/Mul",
        "/blk/attn/Softmax",
        "/ln2d/ReduceMean",
        "/ln2d/Pow",
        "/norm/LayerNormalization",
        "node_softmax",
    ]


def test_graph_modules_per_family() -> None:
    model = sm.SAM2ImageModel(sm.build(sm.tiny_spec(S), seed=0))
    assert list(get_family("sam2").export_modules(model)) == ["encoder", "decoder", "model"]
    with pytest.raises(Exception, match="unknown model family"):
        get_family("vit").export_modules(model)


@pytest.mark.slow
def test_dynamo_exporter(tmp_path) -> None:
    """The torch.export-based exporter gives a valid opset >= 17 graph with the same outputs."""
    import onnxruntime as ort

    model = sm.SAM2ImageModel(sm.build(sm.tiny_spec(S), seed=0))
    modules = get_family("sam2").export_modules(model)
    io = model.geometry.engines()
    path = tmp_path / "decoder.onnx"
    info = export_onnx(modules["decoder"], io["decoder"], path, exporter="dynamo", opset=18)
    assert info["opset"] >= 17 and info["exporter"] == "dynamo"
    feats = model.encode(torch.randn(3, 3, S, S))
    coords, labels = torch.rand(3, 4, 2) * S, torch.ones(3, 4)
    with torch.no_grad():
        want = model.decode(*feats, coords, labels)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = io["decoder"].input_names
    got = session.run(
        None, dict(zip(names, [t.detach().numpy() for t in (*feats, coords, labels)], strict=True))
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=0, atol=1e-4)


def test_bundle_pipeline_config_applies_with_run_options(exported, tmp_path) -> None:
    """A bundle recorded with 128-px patches and threshold 0.7 segments so; run options still apply."""
    from samsem.runtime.config import PipelineConfig
    from samsem.runtime.stages.tiling import TilingConfig

    stored = PipelineConfig(tiling=TilingConfig(patch_size=128), threshold=0.7)
    cfg_file = tmp_path / "pipeline.json"
    cfg_file.write_text(json.dumps(stored.to_dict()))
    bundle = tmp_path / "bundle128"
    args = [
        "export",
        "--checkpoint",
        str(exported["ckpt"]),
        "--out",
        str(bundle),
        "--pipeline-config",
        str(cfg_file),
    ]
    assert main(args) == 0
    out = tmp_path / "out"
    image = exported["images"] / "sem1.png"  # 200 x 240: 2 x 2 patches of 128 px
    assert main(["segment", str(image), "-o", str(out), "--model", str(bundle), "--seed", "3"]) == 0
    report = json.loads((out / "sem1.report.json").read_text())
    assert report["n_patches"] == 4
    assert report["config"]["threshold"] == 0.7 and report["config"]["seed"] == 3
