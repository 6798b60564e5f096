"""The web panel's files: `GET /` and `GET /static/…` answered from a fixed manifest.

The panel is a single page that calls `POST /RPC2` like any other client, so
serving it needs no session, no cookie and no access to VXDB: a worker answers
these requests itself, from memory, without the dispatcher.

Only the files named in `MANIFEST` are ever served, each from the build directory
`make setup` fills (`vcd/panel/dist`, built from `vcd/panel/src` by npm); a request
path is looked up in the manifest, never joined to a filesystem path, so no
request reaches any other file. Every answer carries a strict
Content-Security-Policy (scripts and styles only from vcd itself, no inline code,
images from vcd or `data:` URLs for the graphs, no framing) and asks the browser
not to sniff types or send a Referer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

log = logging.getLogger("vcd.server")

DIST = Path(__file__).resolve().parent / "panel" / "dist"

# request path -> (file in DIST, Content-Type)
MANIFEST: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/panel.js": ("panel.js", "text/javascript; charset=utf-8"),
    "/static/panel.css": ("panel.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'")

SECURITY_HEADERS = (
    f"Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "X-Frame-Options: DENY\r\n"
    "Cross-Origin-Opener-Policy: same-origin\r\n"
    "Cross-Origin-Resource-Policy: same-origin\r\n").encode("ascii")

NOT_BUILT = b"The web panel is not built: run `make setup` (it needs npm).\n"


@dataclass(frozen=True)
class PanelAnswer:
    """What to send: status, Content-Type, body and extra header lines."""
    status: HTTPStatus
    ctype: bytes
    body: bytes
    extra: bytes


_cache: dict[str, bytes] = {}
_warned = False


def is_panel_path(path: str) -> bool:
    """True for the paths the panel owns (`/` and everything under `/static/`)."""
    return path == "/" or path.startswith("/static/")


def _read(filename: str) -> bytes | None:
    """A built file, read once per worker (they are small; a rebuilt panel is served
    after a reload, which starts new workers); None when not built."""
    body = _cache.get(filename)
    if body is None:
        try:
            body = _cache[filename] = (DIST / filename).read_bytes()
        except OSError:
            return None
    return body


def answer(path: str) -> PanelAnswer:
    """The answer to `GET path` (HEAD: the same without the body) for a panel path."""
    if path not in MANIFEST:
        return PanelAnswer(HTTPStatus.NOT_FOUND, b"text/plain", b"Not Found\n", SECURITY_HEADERS)
    filename, ctype = MANIFEST[path]
    body = _read(filename)
    if body is None:
        global _warned
        if not _warned:  # once per worker: a page load asks for several files
            _warned = True
            log.warning("GET %s: the web panel is not built (%s is missing)", path, DIST)
        return PanelAnswer(HTTPStatus.SERVICE_UNAVAILABLE, b"text/plain", NOT_BUILT,
                           SECURITY_HEADERS)
    # no-cache: the browser asks again on every load, so it never mixes an old cached
    # script with a newer page
    return PanelAnswer(HTTPStatus.OK, ctype.encode("ascii"), body,
                       SECURITY_HEADERS + b"Cache-Control: no-cache\r\n")
