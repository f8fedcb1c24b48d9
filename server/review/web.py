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

Tiles: the first request for an image (or its mask) starts its pyramid's build, once (one build per
pyramid at a time): the file is read once (samsem.io), the coarser levels are made by successive 2x area
downsampling (a third of the full level together) and the tiles are written level by level, coarsest
first, under ``OUT/.review-cache/NAME/{image,mask}/``, so the first view is served before the deep levels
exist; a manifest of the source's size and mtime, written last, lets a later run reuse the folder. A tile
request waits for its level, then reads one tile file; hot tiles stay in an LRU. A correction bumps the
image's version, which the page adds to tile URLs, and the changed mask's pyramid is rebuilt.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import os
import shutil
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from samsem.errors import ConfigError, InputError
from samsem.io import IMAGE_SUFFIXES, image_info, read_image, read_mask, write_json
from samsem.server.review import core

TILE = 256
CACHE_DIR = ".review-cache"  # OUT/.review-cache/NAME/{image,mask}/LAYER/LEVEL/COL_ROW.png + manifest.json
MANIFEST = "manifest.json"
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # tiles are a cache: fast to write beats small
STRIP_PIXELS = 1 << 18  # pixels converted to uint8 at a time
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


def top_level(height: int, width: int) -> int:
    """The DZI level of full resolution: level 0 is 1x1, each level halves the next one, rounding up."""
    return math.ceil(math.log2(max(height, width))) if max(height, width) > 1 else 0


def _half(level: np.ndarray) -> np.ndarray:
    h, w = level.shape[:2]
    return cv2.resize(level, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)


def _to_uint8(image: np.ndarray, levels: list[float] | None) -> np.ndarray:
    """``image`` scaled by ``levels`` (default: its range) to uint8; a uint8 ``image`` is overwritten."""
    lo, hi = sorted(levels or [float(image.min()), float(image.max()) + 1.0])
    out = image if image.dtype == np.uint8 else np.empty(image.shape, np.uint8)
    rows = max(1, STRIP_PIXELS // image.shape[1])
    for y in range(0, image.shape[0], rows):  # float copies of a strip, not of the image
        part = image[y : y + rows].astype(np.float32)
        out[y : y + rows] = np.clip((part - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    return out


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


# layer -> (the pyramid its tiles are drawn from, how a tile of a level is drawn)
LAYERS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "image": ("image", lambda gray: gray),
    "mask": ("mask", _mask_tile),
    "outline": ("mask", _outline_tile),
}


def _write_level(folder: Path, level: int, array: np.ndarray, kind: str) -> None:
    """Encode every tile of every layer of ``kind`` of one level (views of ``array``, no copy of it)."""
    draws = {layer: draw for layer, (of, draw) in LAYERS.items() if of == kind}
    for layer in draws:
        (folder / layer / str(level)).mkdir(parents=True)

    def row(r: int) -> None:
        for c in range(-(-array.shape[1] // TILE)):
            part = array[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            for layer, draw in draws.items():
                ok, data = cv2.imencode(".png", draw(part), PNG_PARAMS)
                if not ok:
                    raise OSError(f"PNG encoding of tile {level}/{c}_{r} failed")
                (folder / layer / str(level) / f"{c}_{r}.png").write_bytes(data.tobytes())

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # cv2 encodes without the GIL
        list(pool.map(row, range(-(-array.shape[0] // TILE))))


def build_pyramid(
    folder: Path,
    kind: str,
    load: Callable[[], np.ndarray],
    manifest: dict[str, Any],
    progress: Callable[[int], None],
) -> None:
    """Write the tiles of every layer of ``kind`` at every DZI level into ``folder``, coarsest first.

    ``load`` gives the full-resolution uint8 level; the coarser ones are made by successive 2x area
    downsampling (together a third of it) and each is freed once written; ``progress(level)`` follows
    each level. The manifest is written before the last level is reported, so a folder with a manifest
    is whole and an interrupted build (no manifest) is redone.
    """
    shutil.rmtree(folder, ignore_errors=True)
    chain = [load()]
    while max(chain[-1].shape[:2]) > 1:
        chain.append(_half(chain[-1]))
    top = len(chain) - 1
    for level in range(top + 1):
        _write_level(folder, level, chain.pop(), kind)
        if level == top:
            write_json(folder / MANIFEST, manifest)
        progress(level)


class _Build:
    """One pyramid's build: the levels written so far (coarse first), whether it ended, its error."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.written = -1
        self.ended = False
        self.error: BaseException | None = None
        self._cond = threading.Condition()

    def progress(self, level: int) -> None:
        with self._cond:
            self.written = level
            self._cond.notify_all()

    def end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.ended, self.error = True, error
            self._cond.notify_all()

    def wait(self, level: int) -> None:
        """Until ``level`` is written or the build ended; its error, if it failed."""
        with self._cond:
            self._cond.wait_for(lambda: self.ended or self.written >= level)
        if self.error is not None:
            raise self.error


def _load(path: Path, kind: str, levels: list[float] | None) -> np.ndarray:
    """The full-resolution uint8 level of a pyramid: the image scaled by ``levels``, or the mask 0/255."""
    if kind == "image":
        return _to_uint8(read_image(path), levels)
    mask = read_mask(path)
    mask *= np.uint8(255)
    return mask


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


class Review:
    """The state behind the page: the config, the versions of the masks, the tile pyramids on disk
    (``OUT/.review-cache/NAME/{image,mask}``, one build per source file, a lock per pyramid) and an
    LRU of hot tiles."""

    def __init__(self, config: ReviewConfig, tile_cache: int = 2048) -> None:
        self.config = config
        self.versions: dict[str, int] = {}
        self._tiles = _LRU(tile_cache)
        self._write = threading.Lock()
        self._builds: dict[tuple[str, str], _Build] = {}  # (stem, image|mask) -> its latest build
        self._builds_lock = threading.Lock()

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
        """(height, width) of the image ``stem`` (from its mask's header; the mask has the image's size)."""
        info = image_info(core.mask_path(self.config.out, stem))
        return info.height, info.width

    def _source(self, stem: str, kind: str) -> tuple[Path, dict[str, Any]]:
        """The file a pyramid is made of and its manifest (what a cached pyramid must match to be reused)."""
        report = self.report(stem)  # also: ``stem`` names a report, so a safe folder name
        path = self.image_path(stem) if kind == "image" else core.mask_path(self.config.out, stem)
        st = path.stat()
        levels = report.get("intensity_levels") if kind == "image" else None
        return path, {
            "source": str(path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "intensity_levels": levels,
            "tile": TILE,
        }

    def _pyramid(self, stem: str, kind: str, level: int) -> Path:
        """The folder of the ``kind`` pyramid of ``stem`` once ``level`` is in it. The first request starts
        its build (once, in the background, coarse levels first) unless the cached one's manifest matches
        the source's size and mtime; a new mask version starts a new build after the running one."""
        key, version = (stem, kind), self.versions.get(stem, 0)
        folder = self.config.out / CACHE_DIR / stem / kind
        with self._builds_lock:
            previous = self._builds.get(key)
            build = previous if previous is not None and previous.version == version else None
            if build is None:
                build = self._builds[key] = _Build(version)
        if build is not previous:
            try:
                path, manifest = self._source(stem, kind)
            except InputError as e:
                self._ended(key, build, e)
                raise
            if previous is None and _manifest(folder) == manifest:
                build.end()
            else:
                args = (key, build, previous, folder, path, manifest)
                threading.Thread(target=self._build, args=args, daemon=True).start()
        build.wait(level)
        return folder

    def _build(
        self,
        key: tuple[str, str],
        build: _Build,
        previous: _Build | None,
        folder: Path,
        path: Path,
        manifest: dict[str, Any],
    ) -> None:
        if previous is not None:
            previous.wait(sys.maxsize)  # one build at a time writes the folder
        if previous is not None and _manifest(folder) == manifest:
            self._ended(key, build, None)
            return
        kind, levels = key[1], manifest["intensity_levels"]
        error: BaseException | None = None
        try:
            build_pyramid(folder, kind, lambda: _load(path, kind, levels), manifest, build.progress)
        except OSError as e:  # not an InputError from reading the source: writing the cache failed
            error = InputError(folder, f"cannot write the tile cache ({e.strerror or e})")
        except BaseException as e:  # handed to the waiting requests, which raise it
            error = e
        self._ended(key, build, error)

    def _ended(self, key: tuple[str, str], build: _Build, error: BaseException | None) -> None:
        if error is not None:  # the next request tries again
            with self._builds_lock:
                if self._builds.get(key) is build:
                    del self._builds[key]
        build.end(error)

    def tile(self, stem: str, layer: str, level: int, col: int, row: int) -> bytes | None:
        """The PNG of one tile (read from its pyramid), or None when there is no such tile."""
        if layer not in LAYERS:
            return None
        version = self.versions.get(stem, 0)

        def make() -> bytes | None:
            path = self._pyramid(stem, LAYERS[layer][0], level) / layer / str(level) / f"{col}_{row}.png"
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

        return self._tiles.get((stem, layer, version, level, col, row), make)

    def changed(self, stem: str) -> None:
        """A patch of ``stem`` was replaced: a new version (its mask pyramid checked again), tiles dropped."""
        self.versions[stem] = self.versions.get(stem, 0) + 1
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
            h, w = await run_in_threadpool(review.size, stem)
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
            args = (p["image"], p["layer"], p["level"], p["col"], p["row"])
            data = await run_in_threadpool(review.tile, *args)
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
