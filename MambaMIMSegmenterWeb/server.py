"""Start the web app: offscreen rendering, access gate, upload/download routes, the trame server."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Views render offscreen through EGL (no X display on a server); set before VTK creates a window.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

from aiohttp import web

from .access import AccessGate, is_loopback, resolve_token

MAX_UPLOAD_BYTES = 4 * 1024**3
_CHUNK = 1 << 20


def default_sample() -> Path | None:
    """The sample CT next to a source checkout (``../shared/data``), when present."""
    root = Path(__file__).resolve().parents[1]
    sample = root.parent / "shared" / "data" / "ct_abdomen" / "ct.nii.gz"
    return sample if sample.is_file() else None


def serve_from_args(args: argparse.Namespace) -> int:
    from .app import AppOptions

    try:
        token = resolve_token(args.host, args.token or os.environ.get("MAMBAMIM_WEB_TOKEN"))
    except ValueError as exc:
        print(f"mambamim web: {exc}", file=sys.stderr)
        return 2
    for what, path in (("--data-dir", args.data_dir), ("--load", args.load), ("--sample", args.sample)):
        if path is not None and not path.exists():
            print(f"mambamim web: {what} {path} does not exist", file=sys.stderr)
            return 2
    options = AppOptions(
        data_dir=args.data_dir,
        load=args.load,
        sample=args.sample or default_sample(),
        image_format=args.image_format,
        cache_dir=args.cache_dir,
    )
    serve(options, host=args.host, port=args.port, token=token)
    return 0


def serve(options, host: str, port: int, token: str | None) -> None:
    from trame.app import get_server

    from .app import SegmenterWebApp

    # trame reads its own options from the command line unless told otherwise: ours are parsed already.
    os.environ["TRAME_ARGS"] = "--server"
    server = get_server("mambamim_web", client_type="vue3")
    app = SegmenterWebApp(options, server=server)
    gate = AccessGate(token, on_session_end=app.end_session)

    def bind(wslink_server) -> None:
        aiohttp_app: web.Application = wslink_server.app
        aiohttp_app.middlewares.insert(0, gate.middleware)
        aiohttp_app.router.add_post("/upload", lambda request: _upload(app, request))
        aiohttp_app.router.add_get("/download/{kind}", lambda request: _download(app, request))

    def announce(**_) -> None:
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{server.port}/"
        if token is not None:
            url += f"?token={token}"
        print(f"MambaMIM Segmenter web app: {url}", flush=True)
        if not is_loopback(host):
            print(
                "Serving beyond this machine: put it behind a TLS reverse proxy (see the README); "
                "share the link only with its users.",
                flush=True,
            )

    server.controller.on_server_bind.add(bind)
    server.controller.on_server_ready.add(announce)
    server.start(host=host, port=port, open_browser=False, show_connection_info=False, timeout=0)


async def _upload(app, request: web.Request) -> web.Response:
    """Stream the request body to the session's upload folder, then load it as the case."""
    from .scene import scan_suffix

    name = Path(request.query.get("name", "")).name
    if not scan_suffix(name):
        return web.Response(status=415, text=f"{name or 'the file'}: not a NIfTI, NRRD, MHA, MGH or zip file")
    app.uploads.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=app.uploads)) / name
    size = 0
    with open(path, "wb") as out:
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                out.close()
                path.unlink()
                return web.Response(status=413, text=f"{name}: larger than {MAX_UPLOAD_BYTES >> 30} GiB")
            out.write(chunk)
    with app.state:
        loaded = app.receive_upload(name, path)
    path.unlink(missing_ok=True)
    if not loaded:
        return web.Response(status=422, text=app.state.message)
    return web.Response(text="loaded")


DOWNLOADS = {"labels": "application/octet-stream", "seg.nrrd": "application/octet-stream",
             "dicom-seg": "application/dicom"}


async def _download(app, request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind not in DOWNLOADS:
        raise web.HTTPNotFound(text=f"no download named {kind}")
    folder = Path(tempfile.mkdtemp(dir=app.uploads))
    try:
        path = app.case.export_segmentation(kind, folder)
        body = path.read_bytes()
    except (ValueError, OSError) as exc:
        return web.Response(status=409, text=str(exc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return web.Response(
        body=body,
        content_type=DOWNLOADS[kind],
        headers={"Content-Disposition": f'attachment; filename="{path.name}"'},
    )
