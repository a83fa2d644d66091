"""`herald standalone` as a newcomer runs it: one subprocess on embedded defaults, whose
printed JWT and curl commands (done here with httpx) connect an X account through the OAuth
flow against the sandbox and get a post published."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.polling import eventually


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _printed(log: Path, name: str) -> str:
    found = re.search(rf"^export {name}=(\S+)$", log.read_text(), re.MULTILINE)
    assert found, log.read_text()[-2000:]
    return found.group(1).strip("'")


@pytest.mark.slow
def test_standalone_prints_what_it_takes_to_connect_and_publish_over_http(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    port, sandbox_port = _free_port(), _free_port()
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "herald.cli",
                "standalone",
                "--port",
                str(port),
                "--sandbox-port",
                str(sandbox_port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        eventually(
            lambda: "ready" in err.read_text() or proc.poll() is not None,
            timeout=120,
            what="standalone to be ready",
            every=0.2,
        )
        assert proc.poll() is None, err.read_text()[-4000:]
        token, workspace = _printed(out, "HERALD_TOKEN"), _printed(out, "HERALD_WORKSPACE")
        base = f"http://127.0.0.1:{port}/api/postiz"
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            started = api.get(f"{base}/oauth/x/authorize", params={"workspace_id": workspace})
            assert started.status_code == 200, started.text
            back = httpx.get(started.json()["url"], follow_redirects=False, timeout=30)
            query = urlsplit(back.headers["location"]).query
            connected = api.get(f"{base}/oauth/x/callback?{query}")
            assert connected.status_code == 200, connected.text
            integration = connected.json()["integration"]["id"]
            post = api.post(
                f"{base}/posts",
                json={
                    "integration_id": integration,
                    "content": "Hello from Herald!",
                    "scheduled_at": datetime.now(UTC).isoformat(),
                    "idempotency_key": "first-post",
                },
            )
            assert post.status_code == 201, post.text
            post_url = f"{base}/posts/{post.json()['id']}"
            eventually(
                lambda: api.get(post_url).json()["status"] == "published",
                timeout=60,
                what="the post to be published",
                every=0.5,
            )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
