"""The control API under ``/_sandbox/``: seed accounts and tokens, register OAuth clients,
inject faults, set rate limits and switches, move the clock, and read back every request and
post.

Token values appear only in the answers that issue them; listings never show them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from herald.sandbox.core import Sandbox, TokenPair
from herald.sandbox.faults import FaultSpec, RateLimit
from herald.sandbox.media import media_host


class AccountIn(BaseModel):
    network: str
    account_id: str | None = None
    handle: str | None = None
    password: str | None = Field(default=None, description="app password (Bluesky)")
    scopes: list[str] = Field(default_factory=list)
    access_ttl_s: float | None = Field(default=None, description="default: the network's")
    refresh_ttl_s: float | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    token_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]{0,32}$",
        description="starts every token issued to the account, rotations included",
    )


class TokensIn(BaseModel):
    network: str
    account_id: str
    scopes: list[str] = Field(default_factory=list)
    access_ttl_s: float | None = None
    refresh_ttl_s: float | None = None


class AccountRef(BaseModel):
    network: str
    account_id: str


class TokenRef(BaseModel):
    token: str


class SeedIn(BaseModel):
    """Posts the account published by other means (its owner, another app): a busy account
    in one call. Each network stores them as its own publishing endpoint would."""

    network: str
    account_id: str
    texts: list[str] = Field(min_length=1, max_length=5000)
    settings: dict[str, Any] = Field(
        default_factory=dict, description="per network: Discord channel_id, Reddit subreddit"
    )


class ClockIn(BaseModel):
    advance_s: float


class ClientIn(BaseModel):
    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(default=None, description="none for a public client")


class AuthorizationIn(BaseModel):
    network: str
    account_id: str
    redirect_uri: str
    code_challenge: str | None = None
    code_challenge_method: str = "S256"
    scopes: list[str] = Field(default_factory=list)


def _pair_view(sb: Sandbox, pair: TokenPair) -> dict[str, Any]:
    out = pair.view(sb.now())
    if pair.refresh is not None and pair.refresh.expires_at is not None:
        out["refresh_expires_at"] = pair.refresh.expires_at.isoformat()
    return out


def control_api(sb: Sandbox) -> FastAPI:  # noqa: PLR0915 - one flat list of small routes
    app = FastAPI(
        title="Herald provider sandbox",
        openapi_url="/_sandbox/openapi.json",
        docs_url="/_sandbox/docs",
        redoc_url=None,
        telemetry={"tracing": False},  # the test harness's calls are not Herald's spans
    )
    r = APIRouter(prefix="/_sandbox")

    def network_or_404(name: str) -> str:
        if name not in sb.networks:
            raise HTTPException(404, f"unknown network {name!r}")
        return name

    @r.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "networks": sorted(sb.networks), "now": sb.now().isoformat()}

    @r.post("/reset")
    def reset() -> dict[str, Any]:
        sb.reset()
        return {"ok": True}

    @r.post("/accounts", status_code=201)
    def create_account(body: AccountIn) -> dict[str, Any]:
        network = sb.networks[network_or_404(body.network)]
        problem = body.account_id and network.account_id_problem(body.account_id)
        if problem:
            raise HTTPException(422, problem)
        account = sb.create_account(
            body.network,
            account_id=body.account_id,
            handle=body.handle,
            password=body.password,
            settings=body.settings,
            token_prefix=body.token_prefix,
        )
        pair = sb.issue_tokens(
            body.network,
            account.account_id,
            scopes=tuple(body.scopes),
            access_ttl_s=body.access_ttl_s,
            refresh_ttl_s=body.refresh_ttl_s,
        )
        return {**account.view(), **_pair_view(sb, pair)}

    @r.get("/accounts")
    def list_accounts(network: str | None = None) -> list[dict[str, Any]]:
        with sb._lock:
            accounts = list(sb.accounts.values())
        return [a.view() for a in accounts if network is None or a.network == network]

    @r.post("/tokens", status_code=201)
    def issue_tokens(body: TokensIn) -> dict[str, Any]:
        network_or_404(body.network)
        if sb.account(body.network, body.account_id) is None:
            raise HTTPException(404, "unknown account")
        pair = sb.issue_tokens(
            body.network,
            body.account_id,
            scopes=tuple(body.scopes),
            access_ttl_s=body.access_ttl_s,
            refresh_ttl_s=body.refresh_ttl_s,
        )
        return _pair_view(sb, pair)

    @r.get("/tokens")
    def list_tokens(network: str | None = None, account_id: str | None = None) -> list[Any]:
        with sb._lock:
            tokens = list(sb.tokens.values())
        return [
            {
                "kind": t.kind,
                "network": t.network,
                "account_id": t.account_id,
                "family": t.family,
                "issued_at": t.issued_at.isoformat(),
                "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                "used": t.used_at is not None,
                "revoked": t.revoked,
            }
            for t in tokens
            if (network is None or t.network == network)
            and (account_id is None or t.account_id == account_id)
        ]

    @r.post("/tokens/expire")
    def expire(body: AccountRef) -> dict[str, int]:
        return {"expired": sb.expire_access_tokens(body.network, body.account_id)}

    @r.post("/tokens/revoke")
    def revoke(body: TokenRef) -> dict[str, bool]:
        return {"revoked": sb.revoke(body.token)}

    @r.post("/authorizations", status_code=201)
    def authorization(body: AuthorizationIn) -> dict[str, str]:
        network_or_404(body.network)
        if sb.account(body.network, body.account_id) is None:
            raise HTTPException(404, "unknown account")
        code = sb.issue_code(
            body.network,
            body.account_id,
            redirect_uri=body.redirect_uri,
            challenge=body.code_challenge,
            method=body.code_challenge_method,
            scopes=tuple(body.scopes),
        )
        return {"code": code}

    @r.get("/clients")
    def list_clients() -> dict[str, str]:
        """The registered client id per network (secrets are never shown). A network without
        one accepts any named client."""
        with sb._lock:
            return {network: client[0] for network, client in sb.clients.items()}

    @r.put("/clients/{network}")
    def register_client(network: str, body: ClientIn) -> dict[str, str]:
        sb.register_client(network_or_404(network), body.client_id, body.client_secret)
        return {"network": network, "client_id": body.client_id}

    @r.delete("/clients/{network}")
    def forget_client(network: str) -> dict[str, bool]:
        sb.forget_client(network_or_404(network))
        return {"deleted": True}

    @r.post("/faults", status_code=201)
    def add_fault(spec: FaultSpec) -> dict[str, object]:
        network_or_404(spec.network)
        return sb.faults.add(spec).view()

    @r.get("/faults")
    def list_faults() -> list[dict[str, object]]:
        return [rule.view() for rule in sb.faults.rules()]

    @r.delete("/faults/{rule_id}")
    def delete_fault(rule_id: str) -> dict[str, bool]:
        if not sb.faults.remove(rule_id):
            raise HTTPException(404, "unknown fault")
        return {"deleted": True}

    @r.delete("/faults")
    def clear_faults() -> dict[str, bool]:
        sb.faults.clear()
        return {"deleted": True}

    @r.get("/rate-limits")
    def list_limits() -> dict[str, Any]:
        return {name: limit.model_dump() for name, limit in sb.rate_limiter.limits.items()}

    @r.put("/rate-limits/{network}")
    def set_limit(network: str, limit: RateLimit) -> dict[str, Any]:
        sb.rate_limiter.limits[network_or_404(network)] = limit
        sb.rate_limiter.clear()
        return limit.model_dump()

    @r.delete("/rate-limits/{network}")
    def remove_limit(network: str) -> dict[str, bool]:
        sb.rate_limiter.limits.pop(network_or_404(network), None)
        return {"deleted": True}

    @r.get("/options/{network}")
    def get_options(network: str) -> dict[str, Any]:
        net = sb.networks[network_or_404(network)]
        return {**net.default_options, **sb.options[network]}

    @r.put("/options/{network}")
    def set_options(network: str, values: dict[str, Any]) -> dict[str, Any]:
        net = sb.networks[network_or_404(network)]
        unknown = set(values) - set(net.default_options)
        if unknown:
            raise HTTPException(422, f"unknown options: {sorted(unknown)}")
        sb.options[network].update(values)
        return {**net.default_options, **sb.options[network]}

    @r.get("/requests")
    def requests(
        network: str | None = None,
        account_id: str | None = None,
        since: int = Query(default=0, description="only entries with seq > since"),
    ) -> list[dict[str, Any]]:
        with sb._lock:
            entries = list(sb.journal)
        return [
            e.view()
            for e in entries
            if e.seq > since
            and (network is None or e.network == network)
            and (account_id is None or e.account_id == account_id)
        ]

    @r.get("/posts")
    def posts(network: str | None = None, account_id: str | None = None) -> list[dict[str, Any]]:
        with sb._lock:
            found = list(sb.posts)
        return [
            p.view()
            for p in found
            if (network is None or p.network == network)
            and (account_id is None or p.account_id == account_id)
        ]

    @r.post("/posts", status_code=201)
    def seed_posts(body: SeedIn) -> dict[str, Any]:
        network = sb.networks[network_or_404(body.network)]
        account = sb.account(body.network, body.account_id)
        if account is None:
            raise HTTPException(404, "unknown account")
        ids = [network.seed_post(sb, account, text, body.settings).id for text in body.texts]
        return {"created": len(ids), "ids": ids}

    @r.get("/uploads")
    def uploads(network: str | None = None) -> list[dict[str, Any]]:
        with sb._lock:
            found = list(sb.uploads.values())
        return [u.view() for u in found if network is None or u.network == network]

    @r.get("/clock")
    def clock() -> dict[str, str]:
        return {"now": sb.now().isoformat()}

    @r.post("/clock")
    def advance(body: ClockIn) -> dict[str, str]:
        return {"now": sb.advance(body.advance_s).isoformat()}

    app.include_router(r)
    app.include_router(media_host())

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = [{"loc": list(e["loc"]), "msg": str(e["msg"])} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": detail}, 422)

    app.add_exception_handler(RequestValidationError, on_validation)
    return app
