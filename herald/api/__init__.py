"""Herald's HTTP API (FastAPI), served by ``herald api``. See docs/api.md."""

from herald.api.app import create_app
from herald.api.paths import PREFIX

__all__ = ["PREFIX", "create_app"]
