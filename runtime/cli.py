"""`samsem segment`: segment image files into full-resolution masks with reports (resumable)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

LARGE_PIXELS = 8192 * 8192  # masks of larger images are written as tiled, compressed TIFF


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``segment`` subcommand."""
    p = sub.add_parser(
        "segment",
        help="segment SEM images into metal-line masks",
        description="Segment SEM images (files, directories, globs) with the multi-scale pipeline. "
        "Writes NAME.mask.png (.tif for large images) and NAME.report.json to OUTDIR; images whose "
        "outputs exist are skipped unless --overwrite, so an interrupted run resumes.",
    )
    p.add_argument("inputs", nargs="+", help="image files (PNG/TIFF), directories or globs")
    p.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--model",
        default=None,
        help="model bundle directory or checkpoint (CONFIG:CKPT, CKPT1,CKPT2), or classical (Sauvola) / "
        "classical:otsu; default: the bundled default model",
    )
    p.add_argument("--backend", default="auto", help="torch | onnxruntime | tensorrt | aoti | auto")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=8, help="model inputs per batch (default 8)")
    p.add_argument(
        "--single-scale",
        type=int,
        choices=[1, 2],
        default=None,
        help="run only model 1 (whole image) or model 2 (patches)",
    )
    p.add_argument(
        "--fallback",
        choices=["sauvola", "model1", "model2"],
        default="sauvola",
        help="what fills patches where both models are speckled (default sauvola)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the point prompts")
    p.add_argument("--preview", action="store_true", help="also write NAME.preview.png")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    p.set_defaults(func=run)


def _outputs(out: Path, stem: str, height: int, width: int) -> tuple[Path, Path, Path]:
    suffix = ".tif" if height * width > LARGE_PIXELS else ".png"
    return out / f"{stem}.mask{suffix}", out / f"{stem}.report.json", out / f"{stem}.preview.png"


def run(args: argparse.Namespace) -> int:
    """Segment every input; per-file failures are reported and make the exit code 1."""
    from dataclasses import replace

    import cv2
    from tqdm import tqdm

    from samsem.errors import InputError, SamsemError
    from samsem.io import atomic_path, image_info, list_images, read_image, write_json, write_mask
    from samsem.runtime.config import PipelineConfig
    from samsem.runtime.pipeline import FailedImage, build_pipeline
    from samsem.runtime.preview import preview_image
    from samsem.runtime.stages.decision import DecisionConfig

    config = PipelineConfig(
        batch_size=args.batch_size,
        single_scale=args.single_scale,
        seed=args.seed,
        decision=replace(DecisionConfig(), fallback=args.fallback),
    )
    pipeline = build_pipeline(
        args.model, backend=args.backend, device=args.device, precision=args.precision, config=config
    )
    desc = pipeline.description
    if desc.get("family") == "classical":
        which = "no model in the package" if args.model is None else "as asked"
        print(f"samsem segment: classical {desc['method']} segmenter ({which})", file=sys.stderr)
    else:
        origin = "bundled default " if args.model is None else ""
        print(
            f"samsem segment: {origin}model {desc.get('family', '?')} on backend {desc.get('backend', '?')}, "
            f"device {desc.get('device', args.device)}",
            file=sys.stderr,
        )

    files = list_images(args.inputs)
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise InputError(
                f,
                f"has the same name as {stems[f.stem]}; outputs would collide",
                "input files with distinct names",
            )
        stems[f.stem] = f
    args.out.mkdir(parents=True, exist_ok=True)

    failures: dict[str, str] = {}
    todo: list[tuple[Path, tuple[Path, Path, Path]]] = []
    total = 0
    skipped = 0
    for f in files:
        try:
            info = image_info(f)
        except SamsemError as exc:
            failures[f.name] = str(exc)
            continue
        outs = _outputs(args.out, f.stem, info.height, info.width)
        if not args.overwrite and outs[0].exists() and outs[1].exists():
            skipped += 1
            continue
        todo.append((f, outs))
        total += pipeline.count_inputs(info.height, info.width)

    by_name = {str(f): (f, outs) for f, outs in todo}
    done = 0
    t0 = time.perf_counter()
    with tqdm(total=total, unit="tile", desc="segment", disable=None) as bar:
        sources = [(str(f), (lambda f=f: read_image(f))) for f, _ in todo]
        for result in pipeline.segment_many(sources, progress=bar.update):
            f, (mask_path, report_path, preview_path) = by_name[result.name]
            if isinstance(result, FailedImage):
                failures[f.name] = str(result.error)
                continue
            write_mask(mask_path, result.mask, protect=files)
            report = {**result.report, "input": str(f), "mask": mask_path.name}
            if args.preview:
                with atomic_path(preview_path) as tmp:
                    cv2.imwrite(str(tmp), preview_image(result.image, result.mask, report))
                report["preview"] = preview_path.name
            write_json(report_path, report)  # written last: its presence marks the image as finished
            done += 1
    elapsed = time.perf_counter() - t0
    print(
        f"samsem segment: {done} segmented, {skipped} skipped (outputs exist), {len(failures)} failed "
        f"in {elapsed:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    for name, msg in failures.items():
        print(f"  FAILED {name}: {msg}", file=sys.stderr)
    return 1 if failures else 0
