"""Bundle manifest schema, verification (missing/altered files, newer format, other shapes) and backends."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from samsem.errors import ConfigError, InputError
from samsem.export.bundle_writer import ExportOptions, write_bundle
from samsem.runtime.bundle import manifest as rb
from samsem.runtime.bundle.open import available_backends, open_bundle
from samsem.runtime.config import PipelineConfig, RunOptions
from samsem.runtime.load import load_models
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import save_model
from samsem.runtime.stages.prompts import PromptConfig

S = 64


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    spec = sm.tiny_spec(S)
    out = {}
    for seed in (0, 1):
        out[f"seed{seed}"] = folder / f"tiny{seed}.pt"
        save_model(out[f"seed{seed}"], sm.build(spec, seed=seed), spec)
    return out


@pytest.fixture(scope="module")
def torch_bundle(ckpts, tmp_path_factory) -> Path:
    """A bundle with only the torch weights (fast to write; file checks do not depend on the format)."""
    out = tmp_path_factory.mktemp("b") / "bundle"
    write_bundle(out, [ckpts["seed0"]], options=ExportOptions(formats=("torch",)))
    return out


@pytest.fixture
def copy(torch_bundle, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(torch_bundle, dst)
    return dst


def _edit(bundle: Path, fn) -> None:
    path = bundle / rb.MANIFEST
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_manifest_records_everything(torch_bundle, ckpts) -> None:
    m = rb.read_manifest(torch_bundle)
    assert m.family == "sam2" and m.format_version == rb.FORMAT_VERSION
    assert m.limits == rb.Limits((1, 8, 16), (1, 5, 5))  # opt = pipeline batch size / prompt count
    (entry,) = m.models
    assert entry.scales == (1, 2) and entry.input_size == S
    assert entry.source == {"file": "tiny0.pt", "sha256": rb.sha256_file(ckpts["seed0"])}
    assert entry.io == sm.geometry(sm.tiny_spec(S)).engines()
    assert [(e.format, e.graph, e.file) for e in entry.engines] == [("torch", "model", "model1/weights.pt")]
    assert entry.engines[0].sha256 == rb.sha256_file(torch_bundle / "model1/weights.pt")
    assert m.preprocessing["mean"] == list(sm.PIXEL_MEAN) and m.preprocessing["intensity_percentiles"] == [
        0.5,
        99.5,
    ]
    assert PipelineConfig.from_dict(m.pipeline) == PipelineConfig()
    raw = json.loads((torch_bundle / rb.MANIFEST).read_text())
    assert raw["models"][0]["io"]["decoder"]["profile"]["point_coords"] == [[1, 1, 2], [8, 5, 2], [16, 5, 2]]
    assert rb.manifest_from_dict(m.to_dict(), Path("m.json")) == m  # JSON round trip


def test_missing_file(copy) -> None:
    (copy / "model1/weights.pt").unlink()
    with pytest.raises(InputError, match=r"weights\.pt: bundle file is missing"):
        open_bundle(copy)


def test_altered_file(copy) -> None:
    path = copy / "model1/weights.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"weights\.pt: bundle file was altered: sha256"):
        load_models(str(copy))


def test_newer_format_version(copy) -> None:
    _edit(copy, lambda d: d.update(format_version=rb.FORMAT_VERSION + 1))
    with pytest.raises(InputError, match=r"format version 2 is newer than this samsem reads \(1\)"):
        open_bundle(copy)


def test_not_a_bundle(tmp_path) -> None:
    with pytest.raises(InputError, match=r"manifest\.json is missing"):
        load_models(str(tmp_path))
    (tmp_path / rb.MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not a samsem bundle manifest"):
        open_bundle(tmp_path)


def test_built_for_other_shapes(copy) -> None:
    def bigger(d):
        d["models"][0]["io"]["encoder"]["inputs"][0]["dims"] = ["batch", 3, 2 * S, 2 * S]

    _edit(copy, bigger)
    with pytest.raises(
        InputError, match=r"graph 'encoder' was built for other shapes: image\('batch', 3, 128"
    ):
        open_bundle(copy)


def test_input_size_must_match_spec(copy) -> None:
    _edit(copy, lambda d: d["models"][0].update(input_size=2 * S))
    with pytest.raises(InputError, match="input_size 128 != its spec's"):
        open_bundle(copy)


def test_malformed_fields_name_the_field(copy) -> None:
    _edit(copy, lambda d: d["limits"].update(batch=[4, 2, 16]))
    with pytest.raises(InputError, match=r"limits\.batch is \[4, 2, 16\]"):
        open_bundle(copy)


def test_engine_path_may_not_leave_the_bundle(copy) -> None:
    _edit(copy, lambda d: d["models"][0]["engines"][0].update(file="../elsewhere.pt"))
    with pytest.raises(InputError, match="points outside the bundle"):
        open_bundle(copy)


def test_preprocessing_must_be_the_runtime_s(copy) -> None:
    _edit(copy, lambda d: d["preprocessing"].update(mean=[0.5, 0.5, 0.5]))
    with pytest.raises(InputError, match=r"preprocessing .* differs from what this samsem applies"):
        open_bundle(copy)


def test_more_points_than_the_engines_take(copy) -> None:
    _edit(copy, lambda d: d["pipeline"]["prompts"].update(n_points=9))
    with pytest.raises(InputError, match="pipeline uses 9 point prompts but the engines take at most 5"):
        open_bundle(copy)


def test_torch_backend_from_bundle_equals_checkpoint(torch_bundle, ckpts) -> None:
    loaded = load_models(str(torch_bundle), backend="auto")
    assert loaded.info.to_json()["backend"] == "torch" and loaded.model1 is loaded.model2
    assert "onnxruntime skipped (the bundle has no onnx files)" in loaded.info.to_json()["backend_choice"]
    assert loaded.config == PipelineConfig()
    ref = load_models(ckpts["seed0"])
    rng = np.random.default_rng(0)
    images = rng.random((2, S, S)).astype(np.float32)
    points = (rng.random((2, 3, 2)) * S).astype(np.float32)
    for a, b in zip(loaded.model1.predict(images, points), ref.model1.predict(images, points), strict=True):
        np.testing.assert_array_equal(a, b)


def test_backend_choice_errors(torch_bundle) -> None:
    with pytest.raises(ConfigError, match=r"cannot run bundle .*: the bundle has no onnx"):
        load_models(str(torch_bundle), backend="onnxruntime")
    with pytest.raises(ConfigError, match="unknown backend 'fast'"):
        load_models(str(torch_bundle), backend="fast")
    b = open_bundle(torch_bundle)
    usable = available_backends(b, "cpu")
    assert usable["torch"] is None and usable["tensorrt"] == "the bundle has no tensorrt files"


def test_checkpoints_only_run_on_torch(ckpts) -> None:
    with pytest.raises(ConfigError, match="backend onnxruntime needs a model bundle"):
        load_models(ckpts["seed0"], backend="onnxruntime")


def test_two_checkpoints_give_two_models(ckpts, tmp_path) -> None:
    out = tmp_path / "pair"
    m = write_bundle(out, [ckpts["seed0"], ckpts["seed1"]], options=ExportOptions(formats=("torch",)))
    assert [(e.name, e.scales) for e in m.models] == [("model1", (1,)), ("model2", (2,))]
    assert m.model_for(2).source["file"] == "tiny1.pt"
    loaded = load_models(str(out))
    assert loaded.model1 is not loaded.model2
    same = write_bundle(
        tmp_path / "same", [ckpts["seed0"], ckpts["seed0"]], options=ExportOptions(formats=("torch",))
    )
    assert len(same.models) == 1 and same.models[0].scales == (1, 2)
    with pytest.raises(InputError, match="already exists"):
        write_bundle(out, [ckpts["seed0"]], options=ExportOptions(formats=("torch",)))
    assert not list(tmp_path.glob(".pair.tmp-*"))  # nothing half-written left behind


def test_pipeline_config_round_trip_and_run_options() -> None:
    stored = PipelineConfig(threshold=0.4, prompts=PromptConfig(n_points=3), low_pct=1.0, batch_size=4)
    assert PipelineConfig.from_dict(stored.to_dict()) == stored
    run = RunOptions(batch_size=16, seed=7, single_scale=2, fallback="model1")
    merged = stored.with_options(run)
    assert (merged.threshold, merged.prompts.n_points, merged.low_pct) == (0.4, 3, 1.0)
    assert merged.options == replace(run, flatten=128, min_contrast=0.12)  # None took the model's
    assert stored.with_options(stored.options) == stored
    with pytest.raises(ConfigError, match="invalid pipeline configuration"):
        PipelineConfig.from_dict({**stored.to_dict(), "nonsense": 1})
    with pytest.raises(ConfigError, match="fallback must be one of"):
        RunOptions(fallback="magic")


def test_limits_profile_and_export_options() -> None:
    engines = sm.geometry(sm.tiny_spec(S)).engines()
    prof = rb.Limits((1, 4, 16), (1, 5, 8)).profile(engines["decoder"])
    assert prof["image_embed"] == ((1, 32, 4, 4), (4, 32, 4, 4), (16, 32, 4, 4))
    assert prof["point_labels"] == ((1, 1), (4, 5), (16, 8))
    assert ExportOptions(batch_max=32, points_max=9).limits() == rb.Limits((1, 8, 32), (1, 5, 9))
    with pytest.raises(ConfigError, match="max points 3 < the pipeline's 5"):
        ExportOptions(points_max=3).limits()
    with pytest.raises(ConfigError, match="batch opt"):
        ExportOptions(pipeline=replace(PipelineConfig(), batch_size=32)).limits()
    with pytest.raises(ConfigError, match="unknown export format"):
        ExportOptions(formats=("onnx", "tflite"))
