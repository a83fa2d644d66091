"""A thin typed client for the sandbox's control API (tests and the demo use it)."""

from __future__ import annotations

from typing import Any

import httpx


class SandboxClient:
    """``SandboxClient(server.url).create_account("x")`` and so on; JSON in, JSON out."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/_sandbox", timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._call("POST", "/reset")

    def create_account(self, network: str, **fields: Any) -> dict[str, Any]:
        """Account plus tokens: ``access_token``, ``refresh_token``, ``expires_at``..."""
        result: dict[str, Any] = self._call(
            "POST", "/accounts", json={"network": network, **fields}
        )
        return result

    def issue_tokens(self, network: str, account_id: str, **fields: Any) -> dict[str, Any]:
        body = {"network": network, "account_id": account_id, **fields}
        result: dict[str, Any] = self._call("POST", "/tokens", json=body)
        return result

    def expire_tokens(self, network: str, account_id: str) -> int:
        body = {"network": network, "account_id": account_id}
        return int(self._call("POST", "/tokens/expire", json=body)["expired"])

    def revoke_token(self, token: str) -> bool:
        """Revoke one issued token (as a user removing the app would)."""
        return bool(self._call("POST", "/tokens/revoke", json={"token": token})["revoked"])

    def tokens(self, network: str, account_id: str | None = None) -> list[dict[str, Any]]:
        params = {"network": network} | ({"account_id": account_id} if account_id else {})
        result: list[dict[str, Any]] = self._call("GET", "/tokens", params=params)
        return result

    def authorization_code(self, network: str, account_id: str, **fields: Any) -> str:
        body = {"network": network, "account_id": account_id, **fields}
        return str(self._call("POST", "/authorizations", json=body)["code"])

    def register_client(self, network: str, client_id: str, client_secret: str | None) -> None:
        """Make the network's token endpoints accept this OAuth client only."""
        body = {"client_id": client_id, "client_secret": client_secret}
        self._call("PUT", f"/clients/{network}", json=body)

    def inject(self, network: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Add a fault rule (see :mod:`herald.sandbox.faults` for the fields)."""
        result: dict[str, Any] = self._call(
            "POST", "/faults", json={"network": network, "kind": kind, **fields}
        )
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_rate_limit(self, network: str, limit: int, window_s: int, **fields: Any) -> None:
        self._call(
            "PUT", f"/rate-limits/{network}", json={"limit": limit, "window_s": window_s, **fields}
        )

    def set_options(self, network: str, **values: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PUT", f"/options/{network}", json=values)
        return result

    def seed_posts(
        self, network: str, account_id: str, texts: list[str], **settings: Any
    ) -> list[str]:
        """Posts the account made by other means (newest last); returns their ids."""
        body = {"network": network, "account_id": account_id, "texts": texts, "settings": settings}
        return [str(i) for i in self._call("POST", "/posts", json=body)["ids"]]

    def advance_clock(self, seconds: float) -> None:
        self._call("POST", "/clock", json={"advance_s": seconds})

    def requests(self, network: str | None = None, **params: Any) -> list[dict[str, Any]]:
        query = ({"network": network} if network else {}) | params
        result: list[dict[str, Any]] = self._call("GET", "/requests", params=query)
        return result

    def posts(self, network: str | None = None, **params: Any) -> list[dict[str, Any]]:
        query = ({"network": network} if network else {}) | params
        result: list[dict[str, Any]] = self._call("GET", "/posts", params=query)
        return result

    def uploads(self, network: str | None = None) -> list[dict[str, Any]]:
        """Every media upload the networks received, with the posts it was attached to."""
        query = {"network": network} if network else {}
        result: list[dict[str, Any]] = self._call("GET", "/uploads", params=query)
        return result
