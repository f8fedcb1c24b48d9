"""`samsem export`: write a model bundle (ONNX, TensorRT, AOTInductor, torch weights) from checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser(
        "export",
        help="export checkpoints into a model bundle for `samsem segment --model BUNDLE`",
        description="Export one checkpoint (serving both scales) or two (--checkpoint-2: the patch scale) "
        "into a bundle directory with manifest.json, ONNX graphs and optionally TensorRT engines, an "
        "AOTInductor package and the torch weights.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="samsem or official SAM2 checkpoint")
    p.add_argument("--config", default=None, help="SAM2 config name or YAML (official checkpoints)")
    p.add_argument("--image-size", type=int, default=None, help="model input size (official checkpoints)")
    p.add_argument("--checkpoint-2", type=Path, default=None, help="checkpoint of model 2 (patch scale)")
    p.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    p.add_argument(
        "--formats",
        default="onnx,torch",
        help="comma-separated subset of onnx,trt,aoti,torch (default onnx,torch; trt includes onnx)",
    )
    p.add_argument("--fp16", action="store_true", help="TensorRT / AOTInductor in FP16")
    p.add_argument("--batch-size", type=int, default=None, help="profile opt batch (default: pipeline's)")
    p.add_argument("--max-batch", type=int, default=16, help="profile max batch (default 16)")
    p.add_argument("--max-points", type=int, default=None, help="max point prompts (default: pipeline's)")
    p.add_argument(
        "--exporter",
        choices=["torchscript", "dynamo"],
        default="torchscript",
        help="ONNX exporter (default torchscript)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    p.add_argument(
        "--aoti-device", default="cuda", help="device the AOTInductor package is compiled for (default cuda)"
    )
    p.add_argument(
        "--timing-cache", type=Path, default=None, help="TensorRT timing cache file (read + updated)"
    )
    p.add_argument(
        "--pipeline-config", type=Path, default=None, help="JSON of PipelineConfig.to_dict() to record"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and print the bundle's files."""
    import json

    from samsem.errors import InputError
    from samsem.export.bundle_writer import ExportOptions, write_bundle
    from samsem.runtime.config import PipelineConfig

    pipeline = PipelineConfig()
    if args.pipeline_config is not None:
        try:
            pipeline = PipelineConfig.from_dict(json.loads(args.pipeline_config.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(args.pipeline_config, f"unreadable pipeline config ({exc})") from exc
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    options = ExportOptions(
        formats=formats,
        fp16=args.fp16,
        batch_opt=args.batch_size,
        batch_max=args.max_batch,
        points_max=args.max_points,
        exporter=args.exporter,
        opset=args.opset,
        aoti_device=args.aoti_device,
        timing_cache=args.timing_cache,
        pipeline=pipeline,
    )
    checkpoints = [args.checkpoint] + ([args.checkpoint_2] if args.checkpoint_2 else [])
    manifest = write_bundle(
        args.out,
        checkpoints,
        config=args.config,
        image_size=args.image_size,
        options=options,
        overwrite=args.overwrite,
    )
    print(f"samsem export: {manifest.family} bundle -> {args.out}", file=sys.stderr)
    for m in manifest.models:
        for e in m.engines:
            size = (args.out / e.file).stat().st_size
            print(f"  {e.file:32s} {e.format:9s} {e.precision}  {size / 1e6:8.2f} MB", file=sys.stderr)
    return 0
