"""load_models: --model argument forms (samsem checkpoint, CONFIG:PATH, pairs) and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from samsem.errors import ConfigError, InputError
from samsem.runtime.load import ModelSource, default_bundle, load_models, load_pipeline, resolve_model_arg
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import save_model
from samsem.runtime.models.sam2 import SAM2Segmenter
from samsem.runtime.report import ModelInfo


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two samsem checkpoints (seeds 0, 1), an official-format one and the tiny config as YAML."""
    folder = tmp_path_factory.mktemp("models")
    spec = sm.tiny_spec(128)
    out = {}
    for seed in (0, 1):
        out[f"samsem{seed}"] = folder / f"tiny{seed}.pt"
        save_model(out[f"samsem{seed}"], sm.build(spec, seed=seed), spec)
    out["official"] = folder / "tiny_official.pt"
    torch.save({"model": sm.build(spec, seed=0).state_dict()}, out["official"])
    out["yaml"] = folder / "tiny.yaml"
    OmegaConf.save(sm.compose_config(spec), out["yaml"])
    return out


def _predict(seg, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((2, size, size)).astype(np.float32)
    points = (rng.random((2, 2, 2)) * size).astype(np.float32)
    return seg.predict(images, points)


def test_none_means_the_bundled_default_or_classical() -> None:
    pipeline = load_pipeline(None)
    expected = "bundle" if default_bundle() is not None else "classical"
    assert pipeline.info is not None and pipeline.info.kind == expected
    assert load_pipeline("classical:otsu").info == ModelInfo("classical", method="otsu")


def test_samsem_checkpoint_serves_both_scales(files) -> None:
    loaded = load_models(files["samsem0"])
    assert loaded.model1 is loaded.model2 and isinstance(loaded.model1, SAM2Segmenter)
    assert loaded.info.to_json() == {
        "family": "sam2",
        "backend": "torch",
        "device": "cpu",
        "precision": "fp32",
        "source": str(files["samsem0"]),
        "config": "sam2.1_hiera_t",
        "input_size": 128,
    }
    probs, scores = _predict(loaded.model1, 128)
    assert probs.shape == (2, 32, 32) and scores.shape == (2,)
    same = load_models(str(files["samsem0"]))  # str and Path give the same model
    for a, b in zip(_predict(same.model1, 128), (probs, scores), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pair_gives_two_models(files) -> None:
    loaded = load_models(f"{files['samsem0']},{files['samsem1']}")
    assert loaded.model1 is not loaded.model2
    assert loaded.info.to_json()["source"] == [str(files["samsem0"]), str(files["samsem1"])]
    single = load_models(files["samsem0"])
    np.testing.assert_array_equal(_predict(loaded.model1, 128)[0], _predict(single.model1, 128)[0])
    assert np.abs(_predict(loaded.model2, 128)[0] - _predict(loaded.model1, 128)[0]).max() > 1e-6


def test_config_and_official_checkpoint(files) -> None:
    """A YAML config (its image size is overridden by the spec's default, 1024) + official weights."""
    loaded = load_models(f"{files['yaml']}:{files['official']}")
    assert loaded.info.to_json()["config"] == str(files["yaml"])
    assert loaded.model1.input_size == 1024
    probs, _ = _predict(loaded.model1, 1024)
    assert probs.shape == (2, 256, 256) and 0 <= probs.min() <= probs.max() <= 1


def test_official_name_with_mismatching_weights_lists_keys(files) -> None:
    with pytest.raises(InputError, match=r"shape mismatch.*image_encoder\.trunk\.pos_embed"):
        load_models(f"sam2.1_hiera_t:{files['official']}")


def test_argument_errors(files, tmp_path) -> None:
    with pytest.raises(InputError, match="CONFIG:PATH"):
        load_models(files["official"])  # official weights alone do not say which config
    with pytest.raises(InputError, match="not found"):
        load_models(tmp_path / "absent.pt")
    with pytest.raises(InputError, match="directories are not supported"):
        load_models(tmp_path)
    with pytest.raises(InputError, match="3 models"):
        resolve_model_arg(",".join([str(files["samsem0"])] * 3))
    with pytest.raises(InputError, match="empty model argument"):
        resolve_model_arg(f"{files['samsem0']},")
    with pytest.raises(ConfigError, match="unknown backend 'trt'"):
        load_models(files["samsem0"], backend="trt")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        load_models(files["samsem0"], precision="fp16")
    # a prefix that is not a config name is part of the path
    with pytest.raises(InputError, match="notaconfig:"):
        load_models(f"notaconfig:{files['samsem0']}")


def test_resolve_parses_config_prefixes(files) -> None:
    assert resolve_model_arg(f"sam2_hiera_large:{files['official']}") == (
        ModelSource(files["official"], "sam2_hiera_large"),
    )
    pair = resolve_model_arg(f"{files['samsem0']},sam2.1_hiera_s:{files['official']}")
    assert pair == (ModelSource(files["samsem0"]), ModelSource(files["official"], "sam2.1_hiera_s"))
    assert str(pair[1]) == f"sam2.1_hiera_s:{files['official']}"
