"""Per-patch model choice: every branch of the paper's rule plus the inverted/far-off resolution, and the
robust rule (specks removed before comparing, model 1 distrusted where it is too coarse)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.runtime.stages.decision import DecisionConfig, Reason, Source, decide

S = 64


def _stripe(x0: int, x1: int) -> np.ndarray:
    m = np.zeros((S, S), np.uint8)
    m[:, x0:x1] = 1
    return m


def _speckled(base: np.ndarray, n_side: int = 8) -> np.ndarray:
    """``base`` with n_side**2 isolated single-pixel speckles in its empty right part."""
    m = base.copy()
    for i in range(n_side):
        for j in range(n_side):
            m[2 + 4 * i, 34 + 3 * j] = 1
    return m


CLEAN = _stripe(0, 32)  # left half metal
PAPER = DecisionConfig(rule="paper", fallback="sauvola")


def _decide(pairs: list[tuple[np.ndarray, np.ndarray]], cfg: DecisionConfig | None = None, valid=None):
    m1 = np.stack([a for a, _ in pairs])
    m2 = np.stack([b for _, b in pairs])
    return decide(m1, m2, cfg or PAPER, valid)


def test_every_branch() -> None:
    shifted = _stripe(2, 34)
    cases = {
        Reason.BOTH_SPECKLED: (_speckled(CLEAN), _speckled(CLEAN)),
        Reason.M2_SPECKLED: (CLEAN, _speckled(CLEAN)),
        Reason.M1_SPECKLED: (_speckled(CLEAN), CLEAN),
        Reason.AGREE: (CLEAN, shifted),  # 4 of 64 columns differ
        Reason.INVERTED: (CLEAN, 1 - CLEAN),
        Reason.FG_MISMATCH: (_stripe(0, 10), _stripe(0, 38)),  # agreement 36/64, fg 10/64 vs 38/64
        Reason.DISAGREE: (_stripe(0, 32), _stripe(14, 46)),  # agreement 36/64, same fg fraction
    }
    d = _decide(list(cases.values()))
    assert d.reason.dtype == np.int8 and d.source.dtype == np.int8
    assert [Reason(r) for r in d.reason] == list(cases)
    assert [Source(s) for s in d.source] == [
        Source.FALLBACK,
        Source.MODEL1,
        Source.MODEL2,
        Source.MODEL2,
        Source.MODEL1,
        Source.MODEL1,
        Source.MODEL2,
    ]
    assert d.flagged.tolist() == [True, False, False, False, False, False, False]
    assert d.speckles1.tolist() == [64, 0, 64, 0, 0, 0, 0]
    assert d.speckles2.tolist() == [64, 64, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(d.agreement, [1, 1 - 64 / S**2, 1 - 64 / S**2, 60 / 64, 0, 36 / 64, 36 / 64])
    assert len(d) == 7


@pytest.mark.parametrize(
    ("fallback", "source"),
    [("sauvola", Source.FALLBACK), ("model1", Source.MODEL1), ("model2", Source.MODEL2)],
)
def test_both_speckled_uses_fallback_and_stays_flagged(fallback: str, source: Source) -> None:
    d = _decide([(_speckled(CLEAN), _speckled(_stripe(0, 20)))], replace(PAPER, fallback=fallback))
    assert d.source.tolist() == [source]
    assert d.flagged.tolist() == [True]
    assert d.reason.tolist() == [Reason.BOTH_SPECKLED]


def test_speckled_threshold_is_inclusive() -> None:
    # 7 x 7 = 49 speckles: below 50 → not speckled; with min count 49 → speckled
    pair = (CLEAN, _speckled(CLEAN, n_side=7))
    assert _decide([pair]).reason.tolist() == [Reason.AGREE]
    d = _decide([pair], replace(PAPER, speckled_min_count=49))
    assert d.reason.tolist() == [Reason.M2_SPECKLED] and d.speckles2.tolist() == [49]
    # 2 x 2 blobs (4 px) are speckles with max 16 px but not with max 3 px
    blobs = CLEAN.copy()
    for i in range(8):
        for j in range(8):
            blobs[1 + 5 * i : 3 + 5 * i, 34 + 4 * j : 36 + 4 * j] = 1
    assert _decide([(CLEAN, blobs)]).speckles2.tolist() == [64]
    assert _decide([(CLEAN, blobs)], replace(PAPER, speckle_max_px=3)).speckles2.tolist() == [0]


def test_agreement_threshold_is_inclusive() -> None:
    m1, m2 = _stripe(0, 32), _stripe(14, 46)  # agreement 36/64 = 0.5625
    assert _decide([(m1, m2)], replace(PAPER, agree_min=0.5625)).reason.tolist() == [Reason.AGREE]
    assert _decide([(m1, m2)], replace(PAPER, agree_min=0.57)).reason.tolist() == [Reason.DISAGREE]


def test_fg_fraction_tolerance_is_configurable() -> None:
    m1, m2 = _stripe(0, 10), _stripe(0, 38)  # fg fractions differ by 28/64 = 0.4375
    assert _decide([(m1, m2)], replace(PAPER, fg_fraction_tol=0.44)).reason.tolist() == [Reason.DISAGREE]
    assert _decide([(m1, m2)], replace(PAPER, fg_fraction_tol=0.43)).reason.tolist() == [Reason.FG_MISMATCH]


def test_padding_is_ignored() -> None:
    valid = np.zeros((1, S, S), bool)
    valid[:, :, :32] = True  # right half is padding
    filled = CLEAN.copy()
    filled[:, 32:] = 1  # model 2 fills the padding
    speckled = _speckled(CLEAN)  # model 2 sprinkles speckles in the padding
    d = _decide([(CLEAN, filled), (CLEAN, speckled)], valid=np.concatenate([valid, valid]))
    assert d.agreement.tolist() == [1.0, 1.0]
    assert d.speckles2.tolist() == [0, 0]
    assert d.reason.tolist() == [Reason.AGREE, Reason.AGREE]
    # without the valid mask the same pairs are judged on the padding too
    d = _decide([(CLEAN, filled), (CLEAN, speckled)])
    assert d.reason.tolist() == [Reason.FG_MISMATCH, Reason.M2_SPECKLED]


def test_patch_without_valid_pixels_counts_as_agreeing() -> None:
    d = _decide([(CLEAN, 1 - CLEAN)], valid=np.zeros((1, S, S), bool))
    assert d.agreement.tolist() == [1.0] and d.reason.tolist() == [Reason.AGREE]


def test_bool_masks_and_shape_checks() -> None:
    d = decide(CLEAN[None].astype(bool), (1 - CLEAN)[None].astype(bool), DecisionConfig())
    assert d.reason.tolist() == [Reason.INVERTED]
    with pytest.raises(ValueError, match="same shape"):
        decide(CLEAN[None], CLEAN[None, :10], DecisionConfig())
    with pytest.raises(ValueError, match="valid"):
        decide(CLEAN[None], CLEAN[None], DecisionConfig(), valid=np.ones((1, 5, 5), bool))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"speckle_max_px": 0},
        {"speckled_min_count": 0},
        {"agree_min": 1.5},
        {"agree_min": -0.1},
        {"fg_fraction_tol": -0.01},
        {"fg_fraction_tol": 2.0},
        {"fallback": "otsu"},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        DecisionConfig(**kwargs)


# ------------------------------------------------------------------------------------------ robust rule


def test_robust_rule_removes_specks_before_comparing() -> None:
    robust = DecisionConfig()
    assert robust.rule == "robust"
    d = _decide([(CLEAN, _speckled(CLEAN)), (_speckled(CLEAN), _speckled(CLEAN))], robust)
    # the paper would send the first patch to model 1 and flag the second; specks are noise here
    assert d.speckles2.tolist() == [64, 64]
    assert d.reason.tolist() == [Reason.AGREE, Reason.BOTH_SPECKLED]
    assert d.source.tolist() == [Source.MODEL2, Source.MODEL2] and d.flagged.tolist() == [False, True]
    np.testing.assert_array_equal(d.mask2[0], CLEAN)  # the speck-free mask is what gets pasted
    np.testing.assert_array_equal(d.mask1[1], CLEAN)
    paper = _decide([(CLEAN, _speckled(CLEAN))])
    assert paper.reason.tolist() == [Reason.M2_SPECKLED]
    np.testing.assert_array_equal(paper.mask2[0], _speckled(CLEAN))  # the paper pastes masks as they are


def test_robust_rule_distrusts_a_coarse_model1() -> None:
    thin = np.zeros((S, S), np.uint8)
    thin[:, 10:14] = 1  # 4-px lines
    thin[:, 30:34] = 1
    inverse = 1 - thin
    cfg = DecisionConfig()
    # model 1 inverted: trusted at scale 1 (4-px lines stay 4 px) -> model 1; at scale 4 they are 1 px
    d = decide(np.stack([inverse, inverse]), np.stack([thin, thin]), cfg, model1_scale=np.array([1.0, 4.0]))
    assert d.reason.tolist() == [Reason.INVERTED, Reason.MODEL1_COARSE]
    assert d.source.tolist() == [Source.MODEL1, Source.MODEL2]
    # the width estimate: 2 * area / boundary length
    assert decide(thin[None], thin[None], cfg).agreement.tolist() == [1.0]
    from samsem.runtime.stages.decision import line_width

    assert line_width(np.array([4 * 64 * 2]), np.array([4 * 64])).tolist() == [4.0]
    assert line_width(np.array([0]), np.array([0])).tolist() == [np.inf]


def test_robust_rule_sends_a_noise_response_of_model2_to_model1() -> None:
    """Model 2 speckled, model 1 not, and their foreground fractions far apart: model 2 answered texture or
    noise in a patch without context (a half-empty textured field: false positives in the patch that
    saw no lines), so model 1 decides, however coarse (measured: textured-clean-procedural 2.17 -> 0.96)."""
    lines = np.zeros((S, S), np.uint8)
    for x in range(0, 32, 5):
        lines[:, x : x + 3] = 1  # 3-px lines, 21/64 of the patch: 0.75 px at model 1's scale 4
    empty = np.zeros((S, S), np.uint8)
    cfg = DecisionConfig()
    d = decide(np.stack([empty, empty]), np.stack([_speckled(lines), lines]), cfg, model1_scale=4.0)
    assert d.speckles2.tolist() == [64, 0]
    assert d.reason.tolist() == [Reason.M2_SPECKLED, Reason.MODEL1_COARSE]
    assert d.source.tolist() == [Source.MODEL1, Source.MODEL2]
    # within the foreground tolerance a speckled model 2 still wins where model 1 is coarse
    loose = decide(empty[None], _speckled(lines)[None], replace(cfg, fg_fraction_tol=0.5), model1_scale=4.0)
    assert loose.reason.tolist() == [Reason.MODEL1_COARSE]
