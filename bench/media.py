"""Memory of publishing a large video: ``make bench-media``.

Publishes a 200 MB video to X the way a worker does (fetch through the outbound client into
the disk cache, check, chunked upload) and prints how much the process's peak resident
memory grew. The sandbox runs in a process of its own so its memory is not counted; a small
video is published first so imports and connection pools are already in the baseline.
Goal (issue 12): the increase stays under 50 MB.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

import httpx

from herald.media import Fetcher, prepare
from herald.providers.base import Account, Media, MemoryLedger, PostDraft, TokenSet
from herald.providers.registry import get_provider
from herald.sandbox import SandboxClient
from herald.settings import Settings

VIDEO_BYTES = 200_000_000
GOAL_MB = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the sandbox did not start")


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = f"from herald.sandbox.server import main; main(port={port})"
    sandbox = subprocess.Popen(  # its own process: its memory is not the worker's
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_up(url)
        with tempfile.TemporaryDirectory() as cache:
            run(url, cache)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)


def run(url: str, cache: str) -> None:
    settings = Settings(env="development").with_sandbox(url)
    settings = settings.model_copy(
        update={
            "outbound_allow_hosts": ["127.0.0.1"],
            "media_cache_dir": cache,
            "media_upload_poll_s": 0.05,
            "provider_timeout_s": 60.0,
        }
    )
    control = SandboxClient(url)
    control.set_rate_limit("x", 100_000, 900)  # one APPEND per chunk: hundreds of calls
    seed = control.create_account("x", handle="bench")
    account, tokens = Account(seed["account_id"], handle="bench"), TokenSet(seed["access_token"])
    x = get_provider("x", settings)

    def publish(size: int, tag: str) -> float:
        query = urlencode({"seconds": 60, "bytes": size})
        media = Media(f"{url}/_sandbox/media/video{tag}.mp4?{query}", "video")
        draft = PostDraft(f"bench {tag}", f"bench-{tag}", media=(media,))
        started = time.perf_counter()
        with Fetcher(settings) as fetcher:  # holds the file until the upload is done
            ready = prepare(draft, x, account, fetcher, MemoryLedger())
            x.publish(ready, account, tokens)
        return time.perf_counter() - started

    publish(5_000_000, "warm")
    before = peak_mb()
    seconds = publish(VIDEO_BYTES, "big")
    after = peak_mb()
    [upload] = [u for u in control.uploads("x") if u["bytes"] == VIDEO_BYTES]
    assert upload["attached_to"], "the video was not attached"
    growth = after - before
    print(f"bench-media: {VIDEO_BYTES / 1e6:.0f} MB video to X in {seconds:.1f} s")
    print(f"bench-media: peak RSS {before:.1f} MB -> {after:.1f} MB, increase {growth:.1f} MB")
    verdict = "OK" if growth < GOAL_MB else "OVER"
    print(f"bench-media: goal < {GOAL_MB} MB: {verdict}")
    if growth >= GOAL_MB:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("HERALD_ENV", "development")
    main()
