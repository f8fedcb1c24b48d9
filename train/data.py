"""Training data: dataset discovery, per-IC splits, model-1/model-2 samples, prompts, a torch Dataset.

Dataset folders (each ``--data DIR``) may be laid out as

* ``DIR/manifest.json`` listing the samples: ``{"samples": [{"image": "images/a.png", "mask":
  "masks/a.png", "ic": "chipA"}, ...]}`` (paths relative to DIR; ``ic`` defaults to DIR's name), or the
  manifest ``samsem synth`` writes (``{"images": {name: {"image", "mask", "preset", "source", ...}}}``;
  the IC is the SVG layout a sample was cut from, or its preset for procedural layouts);
* ``DIR/images/*`` with ``DIR/masks/<stem>.*`` or ``DIR/labels/<stem>.svg``: one IC named after DIR;
* ``DIR/<IC>/images`` + ``DIR/<IC>/masks`` (or ``labels``): one IC per sub-folder.

Images are PNG/TIFF; masks PNG/TIFF (nonzero = metal) or SVG layouts (rasterised at the image size).

Splits are per IC and deterministic for a seed: the IC's samples, sorted by name, are permuted with a
generator seeded by (seed, CRC32 of the IC name), and cut into validation, test and train parts
(shares rounded by largest remainder; with 2+ samples at least one validates, with 3+ at least one
tests). ICs listed as out-of-distribution are held out whole (split "ood").

A training *item* is either a whole image (scale 1, resized to the model input like the runtime's
model 1) or one patch of the runtime's tiling (scale 2, ``patch_size`` px with ``min_overlap``, upscaled
to the input). Intensities are normalised with the runtime's per-image percentile levels. Every item's
randomness (augmentation, prompt) comes from a generator seeded by (seed, epoch, item index), so an
epoch is reproducible whatever the worker layout, and a resumed run sees the same data.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from samsem.errors import InputError
from samsem.io import SUPPORTED_SUFFIXES, image_info, read_image, read_mask
from samsem.runtime.stages.preprocess import (
    Background,
    apply_range,
    estimate_background,
    intensity_range,
    resize_square,
)
from samsem.runtime.stages.tiling import TilingConfig, extract_patch, make_tiling
from samsem.train.augment import AugmentConfig, augment

MASK_DIRS = ("masks", "labels")
MASK_SUFFIXES = (*SUPPORTED_SUFFIXES, ".svg")
SPLITS = ("train", "val", "test", "ood")


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``name`` is unique ("<ic>/<stem>"), ``mask`` a PNG/TIFF/SVG path; ``group``
    the dataset folder it came from; ``dark_metal`` whether its metal is darker than the background
    (a ``samsem synth`` image with the "inverted" effect)."""

    name: str
    ic: str
    image: Path
    mask: Path
    group: str = ""
    dark_metal: bool = False


# --------------------------------------------------------------------------------------------- discovery


def _find_mask(folder: Path, stem: str) -> Path | None:
    for sub in MASK_DIRS:
        for suffix in MASK_SUFFIXES:
            candidate = folder / sub / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def _from_folder(folder: Path, ic: str) -> list[Sample]:
    samples = []
    for image in _images_in(folder / "images"):
        mask = _find_mask(folder, image.stem)
        if mask is None:
            raise InputError(image, "no mask for this image", f"{folder}/masks/{image.stem}.png|.tif|.svg")
        samples.append(Sample(f"{ic}/{image.stem}", ic, image, mask, str(folder)))
    return samples


def _manifest_ic(entry: dict, default: str) -> str:
    """IC of a manifest entry: its "ic"; for ``samsem synth`` output the SVG layout a sample was cut
    from (file stem), else its preset; else the dataset folder's name."""
    if entry.get("ic"):
        return str(entry["ic"])
    source = entry.get("source") or {}
    if source.get("kind") == "svg" and source.get("file"):
        return Path(str(source["file"])).stem
    return str(entry.get("preset") or default)


def _from_manifest(root: Path) -> list[Sample]:
    path = root / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data.get("images"), dict):  # samsem synth: {"images": {name: {"image", "mask", ...}}}
            entries = [(name, e) for name, e in data["images"].items()]
        else:
            entries = [(Path(e["image"]).stem, e) for e in data["samples"]]
        out = []
        for name, e in entries:
            ic = _manifest_ic(e, root.name)
            image, mask = root / e["image"], root / e["mask"]
            for p in (image, mask):
                if not p.is_file():
                    raise InputError(p, "listed in the manifest but not found")
            dark = "inverted" in (e.get("effects") or ())
            out.append(Sample(f"{ic}/{name}", ic, image, mask, str(root), dark))
        return out
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            path,
            f"cannot read dataset manifest ({exc!r})",
            '{"samples": [{"image", "mask", "ic"}, ...]} or samsem synth\'s {"images": {...}}',
        ) from None


def discover(root: str | Path) -> list[Sample]:
    """The samples of one dataset folder (see the module docstring for the layouts), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder not found", "a folder of images/ and masks/ or a manifest")
    if (root / "manifest.json").is_file():
        samples = _from_manifest(root)
    elif (root / "images").is_dir():
        samples = _from_folder(root, root.name)
    else:
        samples = []
        for sub in sorted(p for p in root.iterdir() if (p / "images").is_dir()):
            samples += _from_folder(sub, sub.name)
    if not samples:
        raise InputError(
            root, "no labelled images found", "images/ + masks/ (or labels/), IC sub-folders or manifest.json"
        )
    return sorted(samples, key=lambda s: s.name)


def discover_all(roots: Sequence[str | Path]) -> list[Sample]:
    """The samples of several dataset folders; sample names must be unique across them."""
    if not roots:
        raise InputError(None, "no dataset given", "at least one --data folder")
    samples: dict[str, Sample] = {}
    for root in roots:
        for s in discover(root):
            if s.name in samples:
                raise InputError(s.image, f"sample name {s.name!r} also used by {samples[s.name].image}")
            samples[s.name] = s
    return sorted(samples.values(), key=lambda s: s.name)


# ------------------------------------------------------------------------------------------------ splits


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) counts of ``n`` samples: largest-remainder rounding of the shares (ties favour
    train, then val), then at least one validation sample when n >= 2 and one test sample when n >= 3,
    taken from the larger of the other two parts (never leaving train empty)."""
    shares = np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction]) * n
    counts = np.floor(shares).astype(int)
    rest = np.round(shares - counts, 9)
    for k in sorted(range(3), key=lambda k: (-rest[k], k))[: n - counts.sum()]:
        counts[k] += 1
    for k, other, min_n in ((1, 2, 2), (2, 1, 3)):
        if n >= min_n and counts[k] == 0:
            donor = 0 if counts[0] - 1 >= counts[other] else other
            counts[donor] -= 1
            counts[k] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def split_samples(
    samples: Sequence[Sample],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    ood_ics: Sequence[str] = (),
) -> dict[str, list[Sample]]:
    """Deterministic per-IC splits: {"train", "val", "test", "ood"} -> samples sorted by name."""
    known = {s.ic for s in samples}
    missing = sorted(set(ood_ics) - known)
    if missing:
        raise InputError(
            None,
            f"out-of-distribution IC(s) not in the data: {', '.join(missing)}",
            f"one of {', '.join(sorted(known))}",
        )
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for ic in sorted(known):
        group = sorted((s for s in samples if s.ic == ic), key=lambda s: s.name)
        if ic in ood_ics:
            out["ood"] += group
            continue
        rng = np.random.default_rng([seed, zlib.crc32(ic.encode("utf-8"))])
        perm = [group[i] for i in rng.permutation(len(group))]
        n_train, n_val, _ = split_counts(len(group), val_fraction, test_fraction)
        out["val"] += perm[:n_val]
        out["test"] += perm[n_val : len(group) - n_train]
        out["train"] += perm[len(group) - n_train :]
    return {k: sorted(v, key=lambda s: s.name) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Item:
    """One training input: sample index, scale (1 whole image, 2 patch) and box [y0, x0, y1, x1]."""

    sample: int
    scale: int
    box: tuple[int, int, int, int]


def make_items(sizes: Sequence[tuple[int, int]], target: str, tiling: TilingConfig) -> list[Item]:
    """Items of images with the given (H, W) sizes: whole images for "model1", the runtime's patches for
    "model2", both for "single"."""
    items = []
    for k, (h, w) in enumerate(sizes):
        if target in ("model1", "single"):
            items.append(Item(k, 1, (0, 0, h, w)))
        if target in ("model2", "single"):
            items += [
                Item(k, 2, (int(b[0]), int(b[1]), int(b[2]), int(b[3])))
                for b in make_tiling(h, w, tiling).boxes
            ]
    return items


def point_prompt(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random point on the foreground of ``mask`` (S, S) {0,1}: (1, 2) float32 (x, y) pixel indices.

    An empty mask gets a uniformly random pixel: the runtime always prompts with positive points that
    may land on non-metal, and the target (all background) then teaches the model to output nothing.
    """
    fg = np.flatnonzero(mask)
    pick = fg[rng.integers(fg.size)] if fg.size else rng.integers(mask.size)
    y, x = divmod(int(pick), mask.shape[1])
    return np.array([[x, y]], np.float32)


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class LoadedSample:
    """A sample in memory: raw (H, W) uint8/uint16, mask (H, W) uint8 {0,1}, intensity levels (lo, hi)."""

    raw: np.ndarray
    mask: np.ndarray
    levels: tuple[float, float]


def load_sample(sample: Sample, low_pct: float = 0.5, high_pct: float = 99.5) -> LoadedSample:
    """Read image and mask (mask size must match) and compute the runtime's intensity levels."""
    raw = read_image(sample.image)
    mask = read_mask(sample.mask, raw.shape)
    return LoadedSample(raw, mask, intensity_range(raw, low_pct, high_pct))


def item_source(loaded: LoadedSample, item: Item, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The region of ``item`` before resizing: image (h, w) float32 in [0, 1] and mask (h, w) uint8.

    Patches are cut like the runtime does (mirrored to ``patch_size`` where the image is smaller).
    """
    if item.scale == 1:
        return apply_range(loaded.raw, loaded.levels), loaded.mask
    box = np.asarray(item.box)
    crop = extract_patch(loaded.raw, box, patch_size)
    return apply_range(crop, loaded.levels), extract_patch(loaded.mask, box, patch_size)


def item_tensors(
    image: np.ndarray, mask: np.ndarray, points: np.ndarray, scale: int
) -> dict[str, torch.Tensor]:
    """One training item as tensors: image (1, S, S), mask (1, S, S) float32, points (1, 2), labels (1,)
    (ones), scale ()."""
    return {
        "image": torch.from_numpy(image)[None],
        "mask": torch.from_numpy(mask.astype(np.float32))[None],
        "points": torch.from_numpy(points),
        "labels": torch.ones(1, dtype=torch.float32),
        "scale": torch.tensor(scale),
    }


class TrainDataset(torch.utils.data.Dataset):
    """Augmented training items: ``__getitem__`` -> dict of tensors

    image (1, S, S) float32 in [0, 1]; mask (1, S, S) float32 {0,1}; points (1, 2) float32 (x, y);
    labels (1,) float32 (ones); scale () int64. Call :meth:`set_epoch` before each epoch.
    Loaded images are cached per process.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        target: str,
        input_size: int,
        augment_cfg: AugmentConfig,
        tiling: TilingConfig,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.input_size = input_size
        self.augment_cfg = augment_cfg
        self.tiling = tiling
        self.seed = seed
        self.epoch = 0
        sizes = [(info.height, info.width) for info in map(image_info, (s.image for s in self.samples))]
        self.items = make_items(sizes, target, tiling)
        self._cache: dict[int, LoadedSample] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _loaded(self, k: int) -> LoadedSample:
        if k not in self._cache:
            self._cache[k] = load_sample(self.samples[k])
        return self._cache[k]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        rng = np.random.default_rng([self.seed, 1, self.epoch, index])
        image, mask = item_source(self._loaded(item.sample), item, self.tiling.patch_size)
        image, mask = augment(image, mask, self.input_size, self.augment_cfg, rng)
        return item_tensors(image, mask, point_prompt(mask, rng), item.scale)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled item order of one epoch (seeded by seed and epoch)."""
    return np.random.default_rng([seed, 2, epoch]).permutation(n).tolist()


# ------------------------------------------------------------------------------------------------- crops


@dataclass
class PreparedSample:
    """A sample mapped the way the runtime maps it: raw (H, W) uint8/uint16, mask (H, W) uint8 {0,1},
    the background map (None without flattening), the (background, metal) levels, and ``empty``: the
    (y, x) centres of ``crop_size`` windows without metal (on a 1/8 grid; (0, 2) int64 when none)."""

    raw: np.ndarray
    mask: np.ndarray
    background: Background | None
    levels: tuple[float, float]
    empty: np.ndarray

    def mapped(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """The pixels [y0:y1, x0:x1] flattened and mapped to [0, 1] exactly as the runtime's patches:
        (y1 - y0, x1 - x0) float32."""
        crop = self.raw[y0:y1, x0:x1]
        if self.background is None:
            return apply_range(crop, self.levels)
        rows, cols = np.arange(y0, y1), np.arange(x0, x1)
        return self.background.map_range(crop, rows, cols, self.raw.shape, self.levels)


def prepare_sample(sample: Sample, flatten: int, crop_size: int) -> PreparedSample:
    """Read a sample and compute what the runtime computes when it opens the image (background with a
    ``flatten`` px window, glare-clipped levels, the polarity of ``sample.dark_metal``)."""
    raw = read_image(sample.image)
    mask = read_mask(sample.mask, raw.shape)
    background = estimate_background(raw, flatten, sample.dark_metal)
    levels = intensity_range(raw, dark_metal=sample.dark_metal, background=background)
    small = cv2.resize(mask.astype(np.float32), None, fx=1 / 8, fy=1 / 8, interpolation=cv2.INTER_AREA)
    k = max(1, crop_size // 8) | 1
    covered = cv2.blur(small, (k, k), borderType=cv2.BORDER_REFLECT_101)
    empty = np.argwhere(covered < 1e-3).astype(np.int64) * 8 + 4
    return PreparedSample(raw, mask, background, levels, empty)


class CropDataset(torch.utils.data.Dataset):
    """Random crops of a pool of training images (``TrainConfig.sampler == "crops"``); items as
    :class:`TrainDataset`'s: image (1, S, S) float32 in [0, 1], mask (1, S, S), points (1, 2), labels
    (1,), scale () (2 for native-resolution crops, 1 for downscaled ones), with S = ``crop_size``.

    Item ``index`` of an epoch draws, from a generator seeded by (seed, epoch, index): a dataset folder
    (all equally likely), an image in it, a downscale factor, a position (with probability
    ``negative_fraction`` the centre of a window without metal, where the image has one), then the
    paper's augmentation and a random transpose. The crop is mapped like the runtime's inputs
    (:func:`prepare_sample`), area-downscaled by the factor; near the border it is mirrored.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        crop_size: int,
        crops_per_epoch: int,
        scales: Sequence[int],
        scale_probs: Sequence[float],
        negative_fraction: float,
        flatten: int,
        augment_cfg: AugmentConfig,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        groups: dict[str, list[int]] = {}
        for k, s in enumerate(self.samples):
            groups.setdefault(s.group, []).append(k)
        self.groups = [groups[g] for g in sorted(groups)]
        self.crop_size = crop_size
        self.crops_per_epoch = crops_per_epoch
        self.scales = tuple(scales)
        probs = np.asarray(scale_probs, np.float64)
        self.scale_probs = probs / probs.sum()
        self.negative_fraction = negative_fraction
        self.flatten = flatten
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, PreparedSample] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.crops_per_epoch

    def _prepared(self, k: int) -> PreparedSample:
        if k not in self._cache:
            self._cache[k] = prepare_sample(self.samples[k], self.flatten, self.crop_size)
        return self._cache[k]

    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Item ``index`` before augmentation: image (S, S) float32, mask (S, S) uint8, downscale factor."""
        rng = np.random.default_rng([self.seed, 3, self.epoch, index])
        group = self.groups[int(rng.integers(len(self.groups)))]
        prep = self._prepared(group[int(rng.integers(len(group)))])
        h, w = prep.raw.shape
        factor = int(self.scales[int(rng.choice(len(self.scales), p=self.scale_probs))])
        side = self.crop_size * factor
        while factor > 1 and side > min(h, w):
            factor //= 2
            side = self.crop_size * factor
        if rng.random() < self.negative_fraction and len(prep.empty):
            cy, cx = (int(v) for v in prep.empty[int(rng.integers(len(prep.empty)))])
        else:
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0 = int(np.clip(cy - side // 2, 0, max(h - side, 0)))
        x0 = int(np.clip(cx - side // 2, 0, max(w - side, 0)))
        y1, x1 = min(y0 + side, h), min(x0 + side, w)
        image = prep.mapped(y0, x0, y1, x1)
        mask = prep.mask[y0:y1, x0:x1]
        if image.shape != (side, side):
            pad = ((0, side - image.shape[0]), (0, side - image.shape[1]))
            image, mask = np.pad(image, pad, mode="reflect"), np.pad(mask, pad, mode="reflect")
        if factor > 1:
            image = resize_square(np.ascontiguousarray(image), self.crop_size)
            mask = (resize_square(mask.astype(np.float32), self.crop_size) >= 0.5).astype(np.uint8)
        return image, mask, factor

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask, factor = self.crop(index)
        rng = np.random.default_rng([self.seed, 4, self.epoch, index])
        image, mask = augment(image, mask, self.crop_size, self.augment_cfg, rng)
        if rng.random() < 0.5:
            image, mask = np.ascontiguousarray(image.T), np.ascontiguousarray(mask.T)
        return item_tensors(image, mask, point_prompt(mask, rng), 2 if factor == 1 else 1)
