"""The browser caption page (clients/web) served by the daemon at ``/`` with ``--web``.

Only plain files directly in the page's folder are served, by name; no listing, no paths."""

from __future__ import annotations

import re
from pathlib import Path

from streamer.errors import StreamerError

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[a-z]+)")


def default_web_dir() -> Path:
    """clients/web of this checkout (streamer is installed editable by scripts/setup.sh)."""
    return Path(__file__).resolve().parents[2] / "clients" / "web"


def check_web_dir(path: str | Path) -> Path:
    folder = Path(path)
    if not (folder / "index.html").is_file():
        raise StreamerError(f"--web {folder}: no index.html there (the page is in clients/web of the source tree)")
    return folder


def static_file(folder: Path, url_path: str) -> tuple[bytes, str] | None:
    """(body, content type) of the file ``url_path`` names, or None."""
    name = url_path.lstrip("/") or "index.html"
    match = _NAME.fullmatch(name)
    if match is None or match.group(1) not in CONTENT_TYPES:
        return None
    file = folder / name
    if not file.is_file():
        return None
    return file.read_bytes(), CONTENT_TYPES[match.group(1)]
