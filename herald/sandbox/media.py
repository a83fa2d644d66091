"""Media in the sandbox: the uploads every network's emulation records, and a media host.

Uploads (:class:`SandboxUpload`) have a state machine shared by the networks that process
media asynchronously: ``uploading`` (chunks still arriving) → ``in_progress`` → ``succeeded``
or ``failed``. How many status polls processing takes and whether it fails are each
network's options (``processing_polls``, ``processing_fails``), and so are its size limits,
so tests scale them down. Bytes are hashed and counted as they arrive, never kept: a 200 MB
upload costs the sandbox no memory. The journal (``GET /_sandbox/uploads``) lists every
upload with the posts it was attached to, so tests count uploads exactly.

The media host (``GET /_sandbox/media/<name>``) serves generated files: ``image.png`` /
``image.jpg`` / ``image.gif`` (``?w=&h=&pad=``), ``video.mp4`` (``?seconds=&bytes=`` — an
ISO-BMFF file with a ``moov/mvhd`` of that duration, padded to that size and streamed),
``blob.bin`` (``?bytes=``, no recognisable type), and ``redirect?to=<url>`` (a 302).
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from PIL import Image


@dataclass
class SandboxUpload:
    network: str
    account_id: str
    id: str
    kind: str
    declared_bytes: int | None = None
    received: int = 0
    mime: str | None = None
    alt: str | None = None
    state: str = "uploading"
    polls_left: int = 0
    fails: bool = False
    created_at: datetime | None = None
    expires_at: datetime | None = None
    attached_to: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    _hash: Any = field(default_factory=hashlib.sha256, repr=False)
    _head: bytes = b""

    def add(self, chunk: bytes) -> None:
        if len(self._head) < 16:
            self._head = (self._head + chunk)[:16]
        self.received += len(chunk)
        self._hash.update(chunk)

    @property
    def sha256(self) -> str:
        return str(self._hash.hexdigest())

    @property
    def magic(self) -> str | None:
        """What the first bytes say, roughly (the sandbox's own look, not Herald's)."""
        head = self._head
        if head.startswith(b"\x89PNG"):
            return "image/png"
        if head.startswith(b"\xff\xd8\xff"):
            return "image/jpeg"
        if head.startswith(b"GIF8"):
            return "image/gif"
        if head[4:8] == b"ftyp":
            return "video/mp4"
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return "image/webp"
        return None

    def finish(self, polls: int, fails: bool) -> None:
        """Bytes complete: processing takes ``polls`` status reads, then ends."""
        self.polls_left, self.fails = polls, fails
        self.state = "in_progress" if polls > 0 else ("failed" if fails else "succeeded")

    def poll(self) -> str:
        """One status read: the state it shows (processing advances one step per read)."""
        if self.state == "in_progress":
            self.polls_left -= 1
            if self.polls_left <= 0:
                self.state = "failed" if self.fails else "succeeded"
        return self.state

    def view(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "account_id": self.account_id,
            "id": self.id,
            "kind": self.kind,
            "bytes": self.received,
            "sha256": self.sha256,
            "mime": self.magic,
            "alt": self.alt,
            "state": self.state,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "attached_to": list(self.attached_to),
            "data": self.data,
        }


# -- the media host ------------------------------------------------------------------------------


def image_bytes(fmt: str, width: int, height: int) -> bytes:
    out = io.BytesIO()
    # Noise, so the file's size follows its dimensions (a flat colour compresses to nothing).
    image = Image.effect_noise((width, height), 60).convert("RGB")
    image.save(out, format={"jpg": "JPEG"}.get(fmt, fmt.upper()))
    return out.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def video_head(seconds: float) -> bytes:
    """``ftyp`` + ``moov`` (with a version-0 ``mvhd``: timescale 1000)."""
    ftyp = _box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
    mvhd = _box(
        b"mvhd",
        b"\x00\x00\x00\x00"
        + struct.pack(">IIII", 0, 0, 1000, round(seconds * 1000))
        + b"\x00\x01\x00\x00\x01\x00"
        + b"\x00" * 70
        + struct.pack(">I", 2),
    )
    return ftyp + _box(b"moov", mvhd)


def video_stream(seconds: float, total: int) -> Iterator[bytes]:
    head = video_head(seconds)
    body = max(total - len(head) - 8, 0)
    yield head + struct.pack(">I4s", 8 + body, b"mdat")
    block = b"\x00" * (1 << 20)
    while body > 0:
        step = min(body, len(block))
        yield block[:step]
        body -= step


def media_host() -> APIRouter:
    r = APIRouter(prefix="/_sandbox/media")

    @r.get("/redirect")
    def redirect(to: str) -> Response:
        return RedirectResponse(to, status_code=302)

    @r.get("/{name}")
    def serve(  # noqa: PLR0917 - one query parameter each
        name: str,
        w: int = Query(default=64, ge=1, le=10_000),
        h: int = Query(default=48, ge=1, le=10_000),
        seconds: float = Query(default=3.0, ge=0, le=100_000),
        size: int = Query(default=4096, ge=0, le=2 * 1024**3, alias="bytes"),
        pad: int = Query(default=0, ge=0, le=100 * 1024**2),
    ) -> Response:
        stem, _, ext = name.rpartition(".")
        if ext in ("png", "jpg", "gif", "webp") and stem.startswith("image"):
            # ``pad``: zero bytes after the image's end, a large file that is cheap to make.
            body = image_bytes(ext, w, h) + b"\0" * pad
            return Response(body, media_type="application/octet-stream")
        if ext == "mp4" and stem.startswith("video"):
            length = max(size, len(video_head(seconds)) + 8)
            return StreamingResponse(
                video_stream(seconds, length),
                media_type="video/mp4",
                headers={"content-length": str(length)},
            )
        if ext == "bin":
            return Response(b"\x01\x02\x03" * (size // 3), media_type="image/png")
        raise HTTPException(404, f"no generated file {name!r}")

    return r


# -- helpers the networks share --------------------------------------------------------------


async def read_multipart(request: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """A multipart body's text fields and its files (spooled to disk by the parser)."""
    form = await request.form(max_part_size=64 * 1024 * 1024)
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    files = {k: v for k, v in form.multi_items() if not isinstance(v, str)}
    return fields, files


async def absorb_file(file: Any, upload: SandboxUpload) -> None:
    """Count and hash an uploaded file part, in chunks."""
    while chunk := await file.read(1 << 20):
        upload.add(chunk)


async def absorb_body(request: Any, upload: SandboxUpload, limit: int) -> bool:
    """Count and hash a raw request body; False as soon as it passes ``limit``."""
    async for chunk in request.stream():
        upload.add(chunk)
        if upload.received > limit:
            return False
    return True
