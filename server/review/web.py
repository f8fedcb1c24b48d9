"""The review web page of `samsem review OUT` (Starlette): the queue and corrections as JSON, and the
image, mask and mask outline as deep-zoom (DZI) tiles made on demand.

Endpoints: ``GET /`` the page; ``GET /api/queue``; ``GET /api/summary``; ``POST /api/accept``
``{image, patch}``; ``POST /api/replace`` ``{image, patch, source: model1|model2|fallback|file[, file]}``;
``GET /dzi/{image}.dzi``; ``GET /tiles/{image}/{layer}/{level}/{col}_{row}.png`` with layer ``image``,
``mask`` or ``outline`` (256-px tiles, no overlap); ``/osd/`` OpenSeadragon from its npm install folder.

Access: loopback by default; another address needs a token, checked on every request (header
``X-Samsem-Token``, ``Authorization: Bearer T``, ``?token=T`` or the SameSite=Strict cookie that
opening ``/?token=T`` sets). POSTs must be ``application/json``
(no cross-site form can send one without the browser asking first) and the Host header must name the
bound address, so other web pages cannot drive or read a loopback server.

Tiles (first version): each image, mask and outline is read whole (samsem.io) and its downsampled DZI
levels are kept for the last few images; encoded tiles are kept in an LRU. A correction bumps the
image's version, which the page adds to tile URLs, and drops the image's mask levels.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import os
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from samsem.errors import ConfigError, InputError
from samsem.io import IMAGE_SUFFIXES, read_image, read_mask
from samsem.server.review import core

TILE = 256
OPENSEADRAGON = "openseadragon@5.0.1"  # the npm package install.sh installs
WEB_DIR_ENV = "SAMSEM_WEB_DIR"
STATIC = Path(__file__).with_name("static")
MASK_BGRA = (255, 255, 0)  # cyan fill of metal, alpha = coverage * MASK_ALPHA
MASK_ALPHA = 0.45
OUTLINE_BGR = (0, 255, 255)  # yellow, as in the previews
LOOPBACK_NAMES = ("localhost",)
TOKEN_COOKIE = (
    "samsem_review_token"  # set by GET /?token=T (SameSite=Strict), so the page's requests carry it
)


def web_dir() -> Path:
    """Folder npm installs OpenSeadragon into: $SAMSEM_WEB_DIR, else share/samsem-web of the venv."""
    return Path(os.environ.get(WEB_DIR_ENV) or Path(sys.prefix) / "share" / "samsem-web")


def openseadragon_dir(root: Path | None = None) -> Path:
    """The build folder of the npm-installed OpenSeadragon; ConfigError (one line) when it is missing."""
    root = web_dir() if root is None else root
    build = root / "node_modules" / "openseadragon" / "build" / "openseadragon"
    if not (build / "openseadragon.min.js").is_file():
        raise ConfigError(
            f"OpenSeadragon is not installed in {root}: run ./install.sh (needs npm) or "
            f'`npm install --prefix "{root}" {OPENSEADRAGON}` (the folder: ${WEB_DIR_ENV})'
        )
    return build


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only this machine (localhost, 127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ReviewConfig:
    """What the page serves: the output folder, where the input images are (None: each report's input),
    the alternative segmentations by source, and the access token (None: no token)."""

    out: Path
    images: Path | None = None
    alternatives: Mapping[str, Path] = field(default_factory=dict)
    token: str | None = None


class _LRU:
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def drop(self, keep: Callable[[Any], bool]) -> None:
        with self._lock:
            for key in [k for k in self._items if not keep(k)]:
                del self._items[key]


def levels_of(full: np.ndarray) -> list[np.ndarray]:
    """DZI levels 0 (1x1) .. max (``full``): each level halves the next one, rounding up."""
    top = math.ceil(math.log2(max(full.shape[:2]))) if max(full.shape[:2]) > 1 else 0
    levels = [full]
    for _ in range(top):
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA))
    return levels[::-1]


def _to_uint8(image: np.ndarray, levels: list[float] | None) -> np.ndarray:
    lo, hi = sorted(levels or [float(image.min()), float(image.max()) + 1.0])
    return np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)


def _mask_tile(coverage: np.ndarray) -> np.ndarray:
    out = np.zeros((*coverage.shape, 4), np.uint8)
    out[..., :3] = MASK_BGRA
    out[..., 3] = (coverage.astype(np.float32) * MASK_ALPHA).astype(np.uint8)
    return out


def _outline_tile(coverage: np.ndarray) -> np.ndarray:
    metal = (coverage >= 128).astype(np.uint8)
    edge = cv2.morphologyEx(metal, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out = np.zeros((*coverage.shape, 4), np.uint8)
    out[edge] = (*OUTLINE_BGR, 255)
    return out


# layer -> (what its levels are made of, how a tile of a level is drawn)
LAYERS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "image": ("image", lambda gray: gray),
    "mask": ("mask", _mask_tile),
    "outline": ("mask", _outline_tile),
}


class Review:
    """The state behind the page: the config, the versions of the masks, the level and tile caches."""

    def __init__(self, config: ReviewConfig, levels_cache: int = 4, tile_cache: int = 2048) -> None:
        self.config = config
        self.versions: dict[str, int] = {}
        self._levels = _LRU(levels_cache)
        self._tiles = _LRU(tile_cache)
        self._write = threading.Lock()

    def report(self, stem: str) -> dict[str, Any]:
        report = core.reports(self.config.out).get(stem)
        if report is None:
            raise InputError(self.config.out, f"no report for image {stem!r}")
        return report

    def image_path(self, stem: str) -> Path:
        """The input image of ``stem``: in --images by its stem, else the report's input path."""
        if self.config.images is not None:
            for path in sorted(self.config.images.glob(f"{stem}.*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    return path
            raise InputError(self.config.images, f"no image {stem}.*", "the images `samsem segment` read")
        source = self.report(stem).get("input")
        if not source or not Path(source).is_file():
            raise InputError(source, f"input image of {stem!r} not found", "--images DIR")
        return Path(source)

    def size(self, stem: str) -> tuple[int, int]:
        """(height, width) of the image ``stem`` (from its mask, which has the image's size)."""
        return self._level_stack(stem, "mask")[-1].shape[:2]

    def _level_stack(self, stem: str, kind: str) -> list[np.ndarray]:
        version = self.versions.get(stem, 0)

        def make() -> list[np.ndarray]:
            if kind == "image":
                gray = _to_uint8(read_image(self.image_path(stem)), self.report(stem).get("intensity_levels"))
                return levels_of(gray)
            return levels_of(read_mask(core.mask_path(self.config.out, stem)) * np.uint8(255))

        return self._levels.get((stem, kind, version if kind == "mask" else 0), make)

    def tile(self, stem: str, layer: str, level: int, col: int, row: int) -> bytes | None:
        """The PNG of one tile, or None when there is no such tile."""
        if layer not in LAYERS:
            return None
        kind, draw = LAYERS[layer]
        version = self.versions.get(stem, 0)

        def make() -> bytes | None:
            stack = self._level_stack(stem, kind)
            if not 0 <= level < len(stack):
                return None
            part = stack[level][row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
            if part.size == 0:
                return None
            ok, data = cv2.imencode(".png", draw(part))
            return data.tobytes() if ok else None

        return self._tiles.get((stem, layer, version, level, col, row), make)

    def changed(self, stem: str) -> None:
        """A patch of ``stem`` was replaced: new version, its mask levels and tiles dropped."""
        self.versions[stem] = self.versions.get(stem, 0) + 1
        self._levels.drop(lambda k: not (k[0] == stem and k[1] == "mask"))
        self._tiles.drop(lambda k: not (k[0] == stem and k[1] != "image"))

    def replace(self, stem: str, index: int, source: str, file: str | None) -> dict[str, Any]:
        """Replace a patch by an alternative segmentation (``source``) or by a mask file."""
        if source == "file":
            if not file:
                raise InputError(None, "source 'file' needs a 'file'", "a mask file of the image's size")
            other, label = Path(file), None
        elif source in core.ALTERNATIVE_SOURCES:
            folder = self.config.alternatives.get(source)
            if folder is None:
                raise InputError(
                    None,
                    f"no {source} masks",
                    f"`samsem review` started with --alternative {source}=DIR",
                )
            other, label = core.mask_path(folder, stem), source
        else:
            raise InputError(None, f"unknown source {source!r}", "model1, model2, fallback or file")
        with self._write:
            entry = core.replace_from(self.config.out, stem, index, other, label=label)
            self.changed(stem)
        return entry

    def accept(self, stem: str, index: int) -> dict[str, Any]:
        with self._write:
            return core.accept(self.config.out, stem, index)


class TokenMiddleware:
    """Refuse every HTTP request without the token (header, bearer or ?token=) with 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            bearer = request.headers.get("authorization", "")
            given = (
                request.cookies.get(TOKEN_COOKIE)
                or request.headers.get("x-samsem-token")
                or (bearer[7:] if bearer.lower().startswith("bearer ") else None)
                or request.query_params.get("token")
                or ""
            )
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                await JSONResponse({"error": "missing or wrong token"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(exc: Exception, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InputError(None, "request body is not application/json", "a JSON object")
    try:
        body = json.loads(await request.body())
    except ValueError as e:
        raise InputError(None, f"request body is not JSON ({e})", "a JSON object") from None
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise InputError(None, "request body lacks 'image'", "{image, patch, ...}")
    if not isinstance(body.get("patch"), int) or isinstance(body.get("patch"), bool):
        raise InputError(None, "request body lacks an integer 'patch'", "{image, patch, ...}")
    return body


def create_app(config: ReviewConfig, osd: Path | None = None, host: str = "127.0.0.1") -> Starlette:
    """The review app of ``config``; ``osd``: the OpenSeadragon build folder (None: no /osd/ route)."""
    review = Review(config)

    async def page(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html")
        if config.token and "token" in request.query_params:  # checked: the page's requests carry it
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="strict")
        return response

    async def queue(request: Request) -> Response:
        try:
            items = core.queue(config.out)
        except InputError as e:
            return _error(e, 500)
        last = {(e["image"], e["patch"]): e["action"] for e in core.decisions(config.out)}
        return JSONResponse(
            [
                item.to_json()
                | {
                    "version": review.versions.get(item.image, 0),
                    "reviewed": last.get((item.image, item.index)),
                }
                for item in items
            ]
        )

    async def summary(request: Request) -> Response:
        try:
            return JSONResponse(core.summary(config.out))
        except InputError as e:
            return _error(e, 500)

    async def accept(request: Request) -> Response:
        try:
            body = await _body(request)
            return JSONResponse(review.accept(body["image"], body["patch"]))
        except InputError as e:
            return _error(e)

    async def replace(request: Request) -> Response:
        try:
            body = await _body(request)
            entry = review.replace(body["image"], body["patch"], str(body.get("source")), body.get("file"))
        except InputError as e:
            return _error(e)
        return JSONResponse(entry | {"version": review.versions[body["image"]]})

    async def dzi(request: Request) -> Response:
        stem = request.path_params["image"]
        try:
            h, w = review.size(stem)
        except InputError as e:
            return _error(e, 404)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="png" Overlap="0" TileSize="{TILE}"><Size Width="{w}" Height="{h}"/></Image>\n'
        )
        return Response(xml, media_type="application/xml")

    async def tile(request: Request) -> Response:
        p = request.path_params
        try:
            data = review.tile(p["image"], p["layer"], p["level"], p["col"], p["row"])
        except InputError as e:
            return _error(e, 404)
        if data is None:
            return PlainTextResponse("no such tile", status_code=404)
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    routes: list[Route | Mount] = [
        Route("/", page),
        Route("/api/queue", queue),
        Route("/api/summary", summary),
        Route("/api/accept", accept, methods=["POST"]),
        Route("/api/replace", replace, methods=["POST"]),
        Route("/dzi/{image}.dzi", dzi),
        Route("/tiles/{image}/{layer}/{level:int}/{col:int}_{row:int}.png", tile),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    if osd is not None:
        routes.append(Mount("/osd", StaticFiles(directory=osd)))
    hosts = ["*"] if not is_loopback(host) else [host.strip("[]"), "localhost", "127.0.0.1", "::1", "[::1]"]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    if config.token:
        middleware.append(Middleware(TokenMiddleware, token=config.token))
    return Starlette(routes=routes, middleware=middleware)


def serve(
    out: Path,
    images: Path | None,
    alternatives: Mapping[str, Path],
    *,
    host: str,
    port: int,
    token: str | None,
) -> int:
    """Serve the review page of ``out`` until Ctrl-C/SIGTERM."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ConfigError(f"--host {host} is not loopback: give --token T (every request must carry it)")
    core.reports(out)  # an empty or unreadable folder is reported before serving
    app = create_app(ReviewConfig(out, images, dict(alternatives), token), openseadragon_dir(), host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except (OSError, OverflowError) as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e})") from None
    query = f"?token={token}" if token else ""
    print(f"samsem review: http://{host}:{sock.getsockname()[1]}/{query} (Ctrl-C stops)", file=sys.stderr)
    with sock:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0
