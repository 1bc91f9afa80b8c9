"""`mambamim web`: serve the MambaMIM Segmenter to a browser (optional ``[web]`` extra).

Argument parsing only. The app lives in the ``MambaMIMSegmenterWeb`` package (trame-slicer, real
Slicer views), which is imported only here, only when the command runs, so ``mambamim`` itself never
imports Slicer, VTK or trame.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

HELP = "serve the segmenter to a browser: real Slicer views, Segment, reconstruction (needs the [web] extra)"

# What the front end needs beyond mambamim; a missing one means the extra is not installed.
_WEB_MODULES = ("MambaMIMSegmenterWeb", "trame_slicer", "slicer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only). Any other address needs an "
        "access token (--token, $MAMBAMIM_WEB_TOKEN, or one generated and printed at start)",
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument(
        "--token",
        default=None,
        help="access token every page load and websocket must present (prefer $MAMBAMIM_WEB_TOKEN: "
        "command lines are visible to other users of the server)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="server-side folder of scans users may open"
    )
    parser.add_argument("--load", type=Path, default=None, help="scan to show when a session starts")
    parser.add_argument(
        "--sample", type=Path, default=None, help="the built-in example scan (default: the sample CT)"
    )
    parser.add_argument(
        "--image-format",
        choices=("turbo-jpeg", "jpeg", "png", "webp"),
        default="turbo-jpeg",
        help="how views are streamed (png is lossless, larger)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: the module's)")


def run(args: argparse.Namespace) -> int:
    missing = [name for name in _WEB_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"mambamim web: the web front end is not installed (missing {', '.join(missing)}); "
            'install it with: pip install -e ".[web]"  (or: make web-venv)',
            file=sys.stderr,
        )
        return 2
    server = importlib.import_module("MambaMIMSegmenterWeb.server")
    return server.serve_from_args(args)
