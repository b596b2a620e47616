"""The web UI and its JSON API (FastAPI on Starlette; pages rendered with Jinja2).

Why these: FastAPI describes every route in OpenAPI from its type hints (the API's
contract, `/openapi.json`, which the tests fuzz with schemathesis); Starlette under it
gives signed-cookie sessions and static files; Jinja2 is already the letters'
templating. Pages are server-rendered HTML that reads without JavaScript; nothing is
loaded from the internet (no CDN: FastAPI's own /docs pages are off for that reason).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client.exposition import generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from wanwitness import __version__
from wanwitness import store as s
from wanwitness.claims import make
from wanwitness.claims import tickets as tk
from wanwitness.claims.build import ticket_dict
from wanwitness.collector import timeline
from wanwitness.collector.ingest import IngestMetrics
from wanwitness.config import LANGS, Config
from wanwitness.errors import UserError
from wanwitness.store.errors import reason as db_reason
from wanwitness.web import auth, data, metrics

HERE = Path(__file__).parent
log = logging.getLogger("wanwitness.web")
SESSION_COOKIE = "wanwitness_session"
SESSION_MAX_AGE_S = 7 * 86400
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
# What prometheus_client's generate_latest writes: Prometheus's text format.
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# --- the API's shapes (OpenAPI) --------------------------------------------------------

class OutageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    agent: str
    cls: str = Field(alias="class", description="isp_down, local_down, dns_down, degraded "
                     "or unknown (the witness could not see)")
    start: str = Field(description="UTC, ISO 8601")
    end: str | None = Field(description="UTC; null while it goes on")
    start_uncertainty_s: float | None
    evidence: dict[str, Any]


class AgentOut(BaseModel):
    id: str
    enabled: bool
    hb_s: int
    state: str = Field(description="up, an outage class, unknown (silent) or never_seen")
    since: str | None
    status: str | None = Field(description="online/offline as the agent last said on its "
                               "status topic (null: not heard by this collector)")
    last_seen: str | None
    last_heartbeat: str | None
    heap_free: int | None
    heap_peak: int | None
    rssi: int | None
    outbox: int | None = Field(description="records on the board not yet acknowledged")
    flash_erases: int | None
    safe_mode: bool | None
    firmware: str | None
    hardware: str | None = Field(None, description="the board and chip as MicroPython names them "
                                 "(the newest boot record's `hw`)")
    reset_cause: str | None
    last_outage: OutageOut | None
    sees: dict[str, Any] = Field(description="`leds`: each LED's last state; `targets`: each "
                                 "probe target's last result (ok, rtt_ms, error, kind), from "
                                 "the agent's newest records")


class VerifyOut(BaseModel):
    at: str | None
    ok: bool
    count: int | None
    agents: int | None
    checkpoint: int | None
    broken_at: str | None
    problem: str | None


class ChainOut(BaseModel):
    agent: str
    links: int
    head: str


class CheckpointOut(BaseModel):
    checkpoint: int
    made: str | None
    root: str
    agents: int
    links: int
    stamps: int


class LedgerOut(BaseModel):
    count: int
    chains: list[ChainOut]
    checkpoint: CheckpointOut | None
    last_record: str | None
    last_verify: VerifyOut | None


class AppointmentOut(BaseModel):
    at: str | None
    missed: bool


class TicketOut(BaseModel):
    number: str
    opened: str | None
    closed: str | None
    channel: str | None
    operator: str | None
    promised: str | None
    appointments: list[AppointmentOut]
    note: str | None
    outages: list[str]
    declined_s: float | None = None
    line: str | None = None


_WHEN = ("a local time in the tariff's time zone (2026-11-03 09:12) or ISO 8601 with an "
         "offset (2026-11-03T09:12+01:00)")
# A date, or a date and time with an optional offset: what the pages and the CLI take.
TIME_PATTERN = (r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?"
                r"(Z|[+-]\d{2}:\d{2})?\s*$")
_TIME_HELP = "use a date or a date and time, e.g. 2026-11-03, 2026-11-03 09:12 or 2026-11-03T09:12+01:00"
NUMBER_PATTERN = r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$"
Channel = Literal["phone", "email", "app", "office"]


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str = Field(min_length=1, max_length=tk.NUMBER_MAX, pattern=NUMBER_PATTERN)
    opened: str = Field(max_length=64, pattern=TIME_PATTERN, description=_WHEN)
    closed: str | None = Field(None, max_length=64, pattern=TIME_PATTERN, description=_WHEN)
    channel: Channel | None = None
    operator: str | None = Field(None, max_length=tk.OPERATOR_MAX)
    promised: str | None = Field(None, max_length=64, pattern=TIME_PATTERN, description=_WHEN)
    note: str | None = Field(None, max_length=10_000)
    line: str | None = Field(None, max_length=32, description="the line ([lines.NAME] in the "
                             "config) the fault was reported for; needed when it has several")


class TicketPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    closed: str | None = Field(None, max_length=64, pattern=TIME_PATTERN, description=_WHEN)
    channel: Channel | None = None
    operator: str | None = Field(None, max_length=tk.OPERATOR_MAX)
    promised: str | None = Field(None, max_length=64, pattern=TIME_PATTERN, description=_WHEN)
    note: str | None = Field(None, max_length=10_000)
    line: str | None = Field(None, max_length=32, description="the line ([lines.NAME] in the "
                             "config) the fault was reported for; needed when it has several")


class AppointmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str = Field(max_length=64, pattern=TIME_PATTERN, description="when the technician was due: " + _WHEN)
    missed: bool = Field(False, description="the technician did not come")


class SessionOut(BaseModel):
    logged_in: bool
    password_required: bool
    csrf: str = Field(description=f"send it back as the {auth.CSRF_HEADER} header (API) or "
                      f"the `{auth.CSRF_FIELD}` form field")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(max_length=1024)


class Problem(BaseModel):
    detail: str


# Filters: empty is the same as absent (the pages' filter form sends every field).
ClassQ = Annotated[str | None, Query(alias="class", pattern="^(|" + "|".join(data.OUTAGE_CLASSES) + ")$")]
AgentQ = Annotated[str | None, Query(max_length=32)]
RangeQ = Annotated[Literal["day", "week", "month", "year"], Query(
    alias="range", description="the range up to now: day (5-minute steps), week (30 min), month (2 h), year (1 day)")]
TimeQ = Annotated[str | None, Query(max_length=64, pattern=r"^\s*$|" + TIME_PATTERN,
                                    description="ISO 8601 date or time; no offset = UTC")]

StartQ = Annotated[str, Query(max_length=40, pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
                              description="the outage's start as listed (UTC, ms, Z)")]
AgentReq = Annotated[str, Query(max_length=32)]
PeriodQ = Annotated[str | None, Query(pattern=r"^(|\d{4}-\d{2})$", description=(
    "billing period YYYY-MM (it starts on [tariff] period_start_day of that month); "
    "default: the last complete one for a claim, the current one for the calendar"))]
RulesQ = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9-]*$",
                                     description="rule pack (default: [claim] rules)")]
LineQ = Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9_.-]*$", description=(
    "the line ([lines.NAME] in the config); needed when it has several"))]
LangQ = Annotated[Literal["en", "de", "hu", "ru", "sw"] | None,
                  Query(description="letter language (default: [claim] lang)")]
FormatQ = Annotated[Literal["json", "csv", "md", "html", "pdf"], Query(alias="format")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem},
    404: {"model": Problem}, 409: {"model": Problem}, 429: {"model": Problem}}


# --- the app ---------------------------------------------------------------------------

class WebSettings:
    """What the app needs besides the store."""

    def __init__(self, *, tz: ZoneInfo, loopback_only: bool, tls: bool = False,
                 config: Config | None = None,
                 status: Callable[[], dict[str, str]] | None = None,
                 backoff: auth.Backoff | None = None,
                 now_ms: Callable[[], int] = s.now_ms, events_poll_s: float = 2.0,
                 ingest: IngestMetrics | None = None) -> None:
        self.now_ms = now_ms
        self.ingest = ingest  # the collector's ingest measurements for /metrics (None: none)
        self.events_poll_s = events_poll_s
        self.tz = tz
        self.config = config  # None: no claims (they need [tariff], [customer], [isp])
        self.loopback_only = loopback_only
        self.tls = tls
        self.status = status or dict
        self.backoff = backoff or auth.Backoff()


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(store: s.Store, settings: WebSettings) -> FastAPI:
    app = FastAPI(title="wanwitness", version=__version__,
                  description="The outage ledger of your internet line, read and annotated.",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    tz = settings.tz

    def password_mark() -> str:
        """Changes whenever the password does: a session made under another password
        is not logged in (`wanwitness web password` ends every session)."""
        hashed = store.setting(auth.PASSWORD_KEY) or ""
        return hashlib.sha256(hashed.encode()).hexdigest()[:16] if hashed else ""

    def csrf_token(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str) or not token:
            token = request.session["csrf"] = auth.new_csrf()
        return token

    def logged_in(request: Request) -> bool:
        mark = password_mark()
        if not mark:
            # No password: open on loopback; off loopback nobody (it was removed while
            # the collector ran: `collect` would not have started so).
            return settings.loopback_only
        return request.session.get("auth") == mark

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")

    # -- dependencies
    def need_login_api(request: Request) -> None:
        if not logged_in(request):
            raise HTTPException(401, "log in first: POST /api/v1/login")

    def need_csrf_header(request: Request) -> None:
        if not same_origin(request):
            raise HTTPException(403, "cross-origin request refused")
        if not auth.same_token(request.headers.get(auth.CSRF_HEADER), request.session.get("csrf")):
            raise HTTPException(403, f"missing or wrong {auth.CSRF_HEADER} header "
                                     "(GET /api/v1/session gives the token)")

    def check_form_csrf(request: Request, token: str) -> None:
        if not same_origin(request) or not auth.same_token(token, request.session.get("csrf")):
            raise HTTPException(403, "the form has expired or came from another site: "
                                     "reload the page and send it again")

    login_ = [Depends(need_login_api)]
    changes_ = [Depends(need_login_api), Depends(need_csrf_header)]

    def line_tz(line: str | None) -> ZoneInfo:
        """The timezone a ticket's local times are read in: its line's [tariff] timezone
        (a line may have its own), else the configuration's (as `wanwitness ticket`)."""
        conf = settings.config
        if conf is not None and conf.lines and (line or len(conf.lines) == 1):
            return ZoneInfo(conf.for_line(line or None).tariff.timezone)
        return tz

    def when(text: str | None, what: str, zone: ZoneInfo | None = None) -> datetime | None:
        if text is None or not text.strip():
            return None
        try:
            return tk.parse_when(text, zone or tz, what)
        except ValueError as e:
            raise UserError(str(e)) from None

    # -- errors: a clear JSON (API) or page (browser), never a traceback
    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> Response:
        text = str(exc)
        status = (404 if text.startswith(("no ticket", "no agent named", "no outage of"))
                  else 409 if "already exists" in text else 400)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return _page(request, "error.html", {"message": str(exc)}, status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                headers=exc.headers)
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return _page(request, "error.html", {"message": message}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            msg = err.get("msg", "invalid")
            if err.get("type") == "string_pattern_mismatch":
                pattern = (err.get("ctx") or {}).get("pattern")
                msg = (_TIME_HELP if pattern and pattern.endswith(TIME_PATTERN) else
                       "not blank, no control characters" if pattern == NUMBER_PATTERN else msg)
            parts.append(f"{where}: {msg}" if where else msg)
        message = "; ".join(parts) or "invalid request"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=422)
        return _page(request, "error.html", {"message": message}, 422)

    def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        ctx = {"csrf": csrf_token(request), "version": __version__, "tz": tz.key,
               "logged_in": logged_in(request), "password_required": bool(password_mark()),
               "path": request.url.path, **context}
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def local(ms_or_iso: int | str | None) -> str:
        if ms_or_iso is None:
            return ""
        if isinstance(ms_or_iso, str):
            dt = datetime.fromisoformat(ms_or_iso.replace("Z", "+00:00"))
        else:
            dt = datetime.fromtimestamp(ms_or_iso / 1000, UTC)
        return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    def to_ms(text: str) -> int:
        return timeline.parse_time(text, option="time")

    templates.env.filters["local"] = local
    templates.env.filters["ms"] = to_ms
    templates.env.filters["iso"] = data.iso
    templates.env.filters["duration"] = lambda ms: timeline.duration(int(ms))

    # -- session and login ------------------------------------------------------------
    @app.get("/api/v1/session", response_model=SessionOut, tags=["session"])
    def api_session(request: Request) -> dict[str, Any]:
        """Whether this session is logged in, and its CSRF token."""
        return {"logged_in": logged_in(request), "password_required": bool(password_mark()),
                "csrf": csrf_token(request)}

    def try_login(request: Request, password: str) -> None:
        address = request.client.host if request.client else "?"
        wait = settings.backoff.wait_s(address)
        if wait:
            raise HTTPException(429, f"too many failed logins: try again in {wait} s",
                                headers={"Retry-After": str(wait)})
        if not password_mark():
            raise HTTPException(409, "no web password is set (wanwitness web password): "
                                     "nothing to log in to")
        if not auth.check(store, password):
            wait = settings.backoff.failed(address)
            raise HTTPException(401, "wrong password" + (f"; wait {wait} s before the next try"
                                                         if wait else ""))
        settings.backoff.succeeded(address)
        request.session.clear()
        request.session["auth"] = password_mark()
        request.session["csrf"] = auth.new_csrf()

    @app.post("/api/v1/login", response_model=SessionOut, responses=_ERRORS, tags=["session"],
              dependencies=[Depends(need_csrf_header)])
    def api_login(request: Request, body: LoginIn) -> dict[str, Any]:
        """Log this session in (send the CSRF token of GET /api/v1/session)."""
        try_login(request, body.password)
        return api_session(request)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Response:
        return _page(request, "login.html", {"next": _safe_next(next), "error": None})

    @app.post("/login", include_in_schema=False)
    def login_form(request: Request, password: Annotated[str, Form(max_length=1024)] = "",
                   csrf: Annotated[str, Form(max_length=200)] = "",
                   next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
        check_form_csrf(request, csrf)
        try:
            try_login(request, password)
        except HTTPException as e:
            return _page(request, "login.html", {"next": _safe_next(next), "error": e.detail},
                         e.status_code)
        return RedirectResponse(_safe_next(next), status_code=303)

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
        check_form_csrf(request, csrf)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # -- the API ---------------------------------------------------------------------
    @app.get("/api/v1/agents", response_model=list[AgentOut], responses=_ERRORS, tags=["read"],
             dependencies=login_)
    def api_agents() -> list[dict[str, Any]]:
        """Every agent: the line's state now and since when, last seen, the board's health."""
        return data.agents(store, now_ms=settings.now_ms(), status=settings.status())

    def outage_query(agent: str | None, since: str | None, until: str | None, *,
                     local: bool = False) -> tuple:
        """(agent, since_ms, until_ms); a time without an offset is UTC, or with `local`
        (the pages) a local time in the tariff's zone."""
        since, until = (since or "").strip() or None, (until or "").strip() or None

        def ms(text: str | None, what: str) -> int | None:
            if text is None:
                return None
            if local:
                try:
                    return tk.to_ms(tk.parse_when(text, tz, what))
                except ValueError as e:
                    raise UserError(str(e)) from None
            return timeline.parse_time(text, option=what)

        try:
            since_ms, until_ms = ms(since, "since"), ms(until, "until")
        except UserError:
            if local:
                raise
            raise UserError("since/until: use an ISO 8601 date or time, e.g. 2026-11-03 or "
                            "2026-11-03T09:12:00Z") from None
        if since_ms is not None and until_ms is not None and until_ms <= since_ms:
            raise UserError("until must be later than since")
        return agent or None, since_ms, until_ms

    @app.get("/api/v1/outages", response_model=list[OutageOut], response_model_by_alias=True,
             responses=_ERRORS, tags=["read"], dependencies=login_)
    def api_outages(agent: AgentQ = None, since: TimeQ = None, until: TimeQ = None,
                    cls: ClassQ = None) -> list[dict[str, Any]]:
        """Outages and unknown spans overlapping [since, until), oldest first: the fields
        of `wanwitness outages --json`."""
        a, since_ms, until_ms = outage_query(agent, since, until)
        return [data.outage_dict(o) for o in data.outages(store, agent=a, since_ms=since_ms,
                                                          until_ms=until_ms, cls=cls or None,
                                                          now_ms=settings.now_ms())]

    @app.get("/api/v1/outages.csv", response_class=Response, tags=["read"], dependencies=login_,
             responses={**_ERRORS, 200: {"description": "CSV with a header line",
                                         "content": {"text/csv": {"schema": {"type": "string"}}}}})
    def api_outages_csv(agent: AgentQ = None, since: TimeQ = None, until: TimeQ = None,
                        cls: ClassQ = None) -> Response:
        """The same as CSV (`wanwitness outages --csv`)."""
        a, since_ms, until_ms = outage_query(agent, since, until)
        rows = data.outages(store, agent=a, since_ms=since_ms, until_ms=until_ms, cls=cls or None,
                            now_ms=settings.now_ms())
        return Response(timeline.to_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="outages.csv"'})

    @app.get("/api/v1/outage", response_model=dict[str, Any], responses=_ERRORS, tags=["read"],
             dependencies=login_)
    def api_outage(agent: AgentReq, start: StartQ) -> dict[str, Any]:
        """One outage and the ledger records behind it (seq, role, ledger position, hash,
        the record itself)."""
        return data.outage_detail(store, agent, start, now_ms=settings.now_ms())

    @app.get("/outage", response_class=HTMLResponse, include_in_schema=False)
    def outage_page(request: Request, agent: AgentReq, start: StartQ) -> Response:
        if (r := page_login(request)) is not None:
            return r
        detail = data.outage_detail(store, agent, start, now_ms=settings.now_ms())
        return _page(request, "outage.html", {"d": detail, "now_ms": settings.now_ms()})

    def state_now() -> str:
        """What the live stream sends: each agent's state, since when, last heard, status."""
        rows = data.agents(store, now_ms=settings.now_ms(), status=settings.status())
        return json.dumps([{k: a[k] for k in ("id", "state", "since", "last_seen", "status")}
                           for a in rows], separators=(",", ":"))

    @app.get("/api/v1/events", tags=["read"], dependencies=login_, responses={**_ERRORS, 200: {
        "description": "server-sent events: `agents` (a JSON list of each agent's id, state, "
                       "since, last_seen and status) at once and whenever one of them changes; "
                       "a comment line every 15 s keeps the connection open",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
    async def api_events(request: Request) -> StreamingResponse:
        """A live stream of the agents' states (text/event-stream; EventSource in a page)."""
        async def stream() -> AsyncIterator[str]:
            yield "retry: 5000\n\n"
            sent, quiet = None, 0.0
            while not await request.is_disconnected():
                now = await run_in_threadpool(state_now)
                if now != sent:
                    yield f"event: agents\ndata: {now}\n\n"
                    sent, quiet = now, 0.0
                elif quiet >= 15:
                    yield ": still here\n\n"
                    quiet = 0.0
                await asyncio.sleep(settings.events_poll_s)
                quiet += settings.events_poll_s
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/v1/agents/{agent}/revoke", response_model=AgentOut, responses=_ERRORS,
              tags=["agents"], dependencies=changes_)
    def api_agent_revoke(agent: str) -> dict[str, Any]:
        """Refuse the agent's connections and records from now on (its ledger stays;
        `wanwitness agent reset-password NAME` lets it back in)."""
        from wanwitness.collector.agents import set_enabled
        set_enabled(store, agent, False)
        return next(a for a in data.agents(store, now_ms=settings.now_ms(), status=settings.status())
                    if a["id"] == agent)

    @app.get("/agents", response_class=HTMLResponse, include_in_schema=False)
    def agents_page(request: Request) -> Response:
        if (r := page_login(request)) is not None:
            return r
        return _page(request, "agents.html", {
            "agents": data.agents(store, now_ms=settings.now_ms(), status=settings.status()),
            "ledger": data.ledger(store), "external_broker": bool(settings.config and
                                                                 settings.config.broker.url)})

    @app.post("/agents/{agent}/revoke", include_in_schema=False)
    def agent_revoke_form(request: Request, agent: str,
                          csrf: Annotated[str, Form(max_length=200)] = "",
                          confirm: Annotated[str, Form(max_length=40)] = "") -> Response:
        if (r := form_guard(request, csrf)) is not None:
            return r
        if confirm != agent:
            raise UserError(f"to revoke {agent!r}, type its name into the box")
        from wanwitness.collector.agents import set_enabled
        set_enabled(store, agent, False)
        return RedirectResponse("/agents", status_code=303)

    @app.get("/api/v1/ledger", response_model=LedgerOut, responses=_ERRORS, tags=["read"],
             dependencies=login_)
    def api_ledger() -> dict[str, Any]:
        """Each agent's chain (its length and head), the newest checkpoint and the last
        verification of the ledger."""
        return data.ledger(store)

    @app.post("/api/v1/ledger/verify", response_model=LedgerOut, responses=_ERRORS,
              tags=["read"], dependencies=changes_)
    def api_ledger_verify() -> dict[str, Any]:
        """Verify the whole ledger now (as `wanwitness ledger verify`) and keep the result."""
        return data.ledger(store, verify=True)

    def tickets_linked() -> list[dict[str, Any]]:
        from wanwitness.claims import link
        from wanwitness.claims.build import outage_from_timeline
        outages = [outage_from_timeline(o) for o in timeline.query(store, now_ms=settings.now_ms())]
        overrides = tk.overrides(store)
        linked = (link.link_lines(tk.list_all(store), outages, overrides, settings.config)
                  if settings.config is not None else link.link(tk.list_all(store), outages, overrides))
        return [ticket_dict(t) for t in linked]

    def ticket_line(line: str | None) -> str | None:
        """The line a ticket is for, checked against the config (None: it has no lines)."""
        if settings.config is None:
            if line:
                raise UserError(f"no line {line!r}: there is no configuration with lines here")
            return None
        return tk.check_line(settings.config, line or None, how='"line": NAME')

    def line_names() -> list[str]:
        return settings.config.line_names() if settings.config is not None else []

    def ticket_out(number: str) -> dict[str, Any]:
        for t in tickets_linked():
            if t["number"] == number:
                return t
        raise UserError(f"no ticket {number!r}")

    @app.get("/api/v1/tickets", response_model=list[TicketOut], responses=_ERRORS,
             tags=["tickets"], dependencies=login_)
    def api_tickets() -> list[dict[str, Any]]:
        """Every ticket, oldest report first, with the outages each is linked to."""
        return tickets_linked()

    def add_ticket(number: str, opened: str, *, closed: str | None = None,
                   channel: str | None = None, operator: str | None = None,
                   promised: str | None = None, note: str | None = None,
                   line: str | None = None) -> str:
        """Validate and store a ticket (UserError: what is wrong); returns its number."""
        line = ticket_line(line)
        zone = line_tz(line)
        try:
            at = when(opened, "opened", zone)
            if at is None:
                raise ValueError("a ticket needs when you reported the fault")
            t = tk.new_ticket(number, at, tz=zone, closed=when(closed, "closed", zone),
                              channel=tk.check_channel(channel or None), operator=operator,
                              promised=when(promised, "promised", zone), note=note, line=line)
        except ValueError as e:
            raise UserError(f"ticket {number.strip()}: {e}") from None
        tk.add(store, t)
        return t.number

    @app.post("/api/v1/tickets", response_model=TicketOut, status_code=201,
              responses=_ERRORS, tags=["tickets"], dependencies=changes_)
    def api_ticket_add(body: TicketIn) -> dict[str, Any]:
        """Record a fault report (linked to outages by time)."""
        return ticket_out(add_ticket(body.number, body.opened, closed=body.closed,
                                     channel=body.channel, operator=body.operator,
                                     promised=body.promised, note=body.note, line=body.line))

    @app.post("/api/v1/tickets/{number}/appointments", response_model=TicketOut, status_code=201,
              responses=_ERRORS, tags=["tickets"], dependencies=changes_)
    def api_ticket_appointment(number: str, body: AppointmentIn) -> dict[str, Any]:
        """A technician appointment for the ticket (`missed`: the technician did not come;
        rules such as TKG §58(4) pay for it)."""
        due = when(body.at, "at", line_tz(tk.get(store, number).line))
        assert due is not None  # the pattern admits no empty time
        tk.add_appointment(store, number, due, body.missed)
        return ticket_out(tk.get(store, number).number)

    @app.patch("/api/v1/tickets/{number}", response_model=TicketOut, responses=_ERRORS,
               tags=["tickets"], dependencies=changes_)
    def api_ticket_patch(number: str, body: TicketPatch) -> dict[str, Any]:
        """Change a ticket: the fields sent (null clears one), e.g. {"closed": "..."}."""
        given = body.model_dump(exclude_unset=True)
        changes: dict[str, Any] = {}
        # local times in the timezone of the line the ticket will be on
        zone = line_tz(ticket_line(given["line"]) if given.get("line") and line_names()
                       else tk.get(store, number).line)
        for key in ("closed", "promised"):
            if key in given:
                changes[key] = when(given[key], key, zone)
        for key in ("channel", "operator", "note"):
            if key in given:
                changes[key] = given[key]
        if "line" in given:
            if not line_names():
                raise UserError("line: there are no [lines.NAME] in the configuration")
            changes["line"] = ticket_line(given["line"])
        try:
            t = tk.update(store, number, zone, **changes)
        except ValueError as e:
            raise UserError(f"ticket {number.strip()}: {e}") from None
        return ticket_out(t.number)

    # -- claims -----------------------------------------------------------------------
    def claim_for(period: str | None, rules: str | None, lang: str | None,
                  line: str | None = None) -> tuple[dict[str, Any], Any, str]:
        """(the claim, its inputs, its language) for the period, rule pack and line."""
        from wanwitness.claims import build as b
        conf = settings.config
        if conf is None:
            raise UserError("claims are not available here (no configuration)")
        conf = conf.for_line(line or None, how="a line (line=NAME)")
        language = lang or conf.claim.lang
        pack, options = make.choose_pack(conf, rules or None, {}, how="a rule pack")
        try:
            inputs = b.from_store(store, conf, period or None,
                                  now=datetime.fromtimestamp(settings.now_ms() / 1000, UTC))
        except b.PeriodError as e:
            raise UserError(f"period: {e}") from None
        result = b.build(inputs, pack, options, language)
        result["warnings"] = list(inputs.warnings)
        return result, inputs, language

    @app.get("/api/v1/claims/rules", response_model=dict[str, Any], responses=_ERRORS,
             tags=["claims"], dependencies=login_)
    def api_claim_rules() -> dict[str, Any]:
        """The rule packs there are, and the configured one."""
        from wanwitness.claims.build import pack_names
        conf = settings.config
        return {"rules": pack_names(), "default": conf.claim.rules if conf else "",
                "langs": list(LANGS), "default_lang": conf.claim.lang if conf else "en"}

    @app.get("/api/v1/claims/preview", response_model=dict[str, Any], responses=_ERRORS,
             tags=["claims"], dependencies=login_)
    def api_claim_preview(period: PeriodQ = None, rules: RulesQ = None,
                          lang: LangQ = None, line: LineQ = None) -> dict[str, Any]:
        """The claim for a billing period (of one line) as JSON (`wanwitness claim
        --format json`), with `warnings`: what the evidence lacks (time the witness did
        not see, tickets of no line, ...)."""
        return claim_for(period, rules, lang, line)[0]

    @app.get("/api/v1/claims/download", response_class=Response, tags=["claims"],
             dependencies=login_, responses={**_ERRORS, 200: {
                 "description": "the claim (json, csv) or its letter (md, html, pdf)",
                 "content": {t.split(";")[0]: {"schema": {"type": "string"}}
                             for t in make.MEDIA_TYPES.values()}}})
    def api_claim_download(fmt: FormatQ, period: PeriodQ = None, rules: RulesQ = None,
                           lang: LangQ = None, line: LineQ = None) -> Response:
        """The claim as a file: `format` json, csv, md, html or pdf (the letter)."""
        result, _inputs, language = claim_for(period, rules, lang, line)
        if fmt in ("md", "html", "pdf") and (missing := make.missing_parties(result)):
            raise UserError(f"a letter needs {' and '.join(missing)}: set it in the configuration")
        of_line = f"{result['line']}-" if result.get("line") else ""
        name = f"claim-{of_line}{result['period']['label']}-{result['rules']['name']}.{fmt}"
        return Response(make.encode(result, fmt, language), media_type=make.MEDIA_TYPES[fmt],
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/v1/claims/evidence", response_class=Response, tags=["claims"],
             dependencies=login_, responses={**_ERRORS, 200: {
                 "description": "the evidence bundle (zip; python3 verify.py checks it)",
                 "content": {"application/zip": {"schema": {"type": "string"}}}}})
    def api_claim_evidence(period: PeriodQ = None, rules: RulesQ = None,
                           line: LineQ = None) -> Response:
        """The evidence bundle of the claim: its ledger records, the chain up to the head
        and a verifier that needs nothing but Python."""
        import tempfile

        from wanwitness.claims.bundle import write_bundle
        result, inputs, _language = claim_for(period, rules, None, line)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "evidence.zip"
            write_bundle(path, store, result, inputs,
                         settings.config.stamp.tsa_certs if settings.config else ())
            body = path.read_bytes()
        of_line = f"{result['line']}-" if result.get("line") else ""
        name = f"evidence-{of_line}{result['period']['label']}.zip"
        return Response(body, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # -- pages ------------------------------------------------------------------------
    def page_login(request: Request) -> Response | None:
        if logged_in(request):
            return None
        return RedirectResponse("/login?next=" + quote(request.url.path), status_code=303)

    def form_guard(request: Request, csrf: str) -> Response | None:
        """A form post: the login page when not logged in, 403 without the CSRF token."""
        if (r := page_login(request)) is not None:
            return r
        check_form_csrf(request, csrf)
        return None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def now_page(request: Request) -> Response:
        if (r := page_login(request)) is not None:
            return r
        now = settings.now_ms()
        return _page(request, "now.html", {"agents": data.agents(store, now_ms=now,
                                                                 status=settings.status()),
                                           "now_ms": now})

    @app.get("/outages", response_class=HTMLResponse, include_in_schema=False)
    def outages_page(request: Request, agent: AgentQ = None, since: TimeQ = None,
                     until: TimeQ = None, cls: ClassQ = None) -> Response:
        if (r := page_login(request)) is not None:
            return r
        a, since_ms, until_ms = outage_query(agent, since, until, local=True)
        now = settings.now_ms()
        rows = data.outages(store, agent=a, since_ms=since_ms, until_ms=until_ms, cls=cls or None,
                            now_ms=now)
        # The exports ask the API, whose times without an offset are UTC: sent in UTC.
        export = {"agent": a or "", "since": data.iso(since_ms) or "",
                  "until": data.iso(until_ms) or "", "class": cls or ""}
        return _page(request, "outages.html", {
            "rows": rows, "now_ms": now, "classes": data.OUTAGE_CLASSES,
            "q": {"agent": agent or "", "since": since or "", "until": until or "",
                  "class": cls or ""},
            "export": urlencode({k: v for k, v in export.items() if v})})

    @app.get("/tickets", response_class=HTMLResponse, include_in_schema=False)
    def tickets_page(request: Request) -> Response:
        if (r := page_login(request)) is not None:
            return r
        return _page(request, "tickets.html", {"tickets": tickets_linked(), "lines": line_names(),
                                               "channels": tk.CHANNELS, "error": None})

    @app.post("/tickets", include_in_schema=False)
    def tickets_form(request: Request, csrf: Annotated[str, Form(max_length=200)] = "",
                     number: Annotated[str, Form(max_length=tk.NUMBER_MAX)] = "",
                     opened: Annotated[str, Form(max_length=64)] = "",
                     channel: Annotated[str, Form(max_length=20)] = "",
                     operator: Annotated[str, Form(max_length=tk.OPERATOR_MAX)] = "",
                     note: Annotated[str, Form(max_length=10_000)] = "",
                     line: Annotated[str, Form(max_length=32)] = "") -> Response:
        if (r := form_guard(request, csrf)) is not None:
            return r
        try:
            if not number.strip() or not opened.strip():
                raise UserError("a ticket needs its number and when you reported the fault")
            add_ticket(number, opened, channel=channel or None, operator=operator or None,
                       note=note or None, line=line or None)
        except UserError as e:
            return _page(request, "tickets.html", {
                "tickets": tickets_linked(), "channels": tk.CHANNELS, "error": str(e),
                "lines": line_names(),
                "form": {"number": number, "opened": opened, "channel": channel,
                         "operator": operator, "note": note, "line": line}}, 400)
        return RedirectResponse("/tickets", status_code=303)

    @app.post("/tickets/{number}/close", include_in_schema=False)
    def ticket_close_form(request: Request, number: str,
                          csrf: Annotated[str, Form(max_length=200)] = "",
                          closed: Annotated[str, Form(max_length=64)] = "") -> Response:
        if (r := form_guard(request, csrf)) is not None:
            return r
        at = when(closed, "closed") or datetime.fromtimestamp(settings.now_ms() / 1000, UTC)
        tk.update(store, number, tz, closed=at)
        return RedirectResponse("/tickets", status_code=303)

    @app.post("/tickets/{number}/edit", include_in_schema=False)
    def ticket_edit_form(request: Request, number: str,
                         csrf: Annotated[str, Form(max_length=200)] = "",
                         channel: Annotated[str, Form(max_length=20)] = "",
                         operator: Annotated[str, Form(max_length=tk.OPERATOR_MAX)] = "",
                         promised: Annotated[str, Form(max_length=64)] = "",
                         closed: Annotated[str, Form(max_length=64)] = "",
                         note: Annotated[str, Form(max_length=10_000)] = "",
                         line: Annotated[str, Form(max_length=32)] = "") -> Response:
        if (r := form_guard(request, csrf)) is not None:
            return r
        more: dict[str, Any] = {"line": ticket_line(line)} if line else {}
        try:
            tk.update(store, number, tz, channel=channel or None, operator=operator or None,
                      promised=when(promised, "promised"), closed=when(closed, "closed"),
                      note=note or None, **more)
        except ValueError as e:
            raise UserError(f"ticket {number.strip()}: {e}") from None
        return RedirectResponse("/tickets", status_code=303)

    @app.post("/tickets/{number}/appointment", include_in_schema=False)
    def ticket_appointment_form(request: Request, number: str,
                                csrf: Annotated[str, Form(max_length=200)] = "",
                                at: Annotated[str, Form(max_length=64)] = "",
                                missed: Annotated[str, Form(max_length=10)] = "") -> Response:
        if (r := form_guard(request, csrf)) is not None:
            return r
        due = when(at, "appointment")
        if due is None:
            raise UserError("an appointment needs the time the technician was due")
        tk.add_appointment(store, number, due, bool(missed))
        return RedirectResponse("/tickets", status_code=303)

    def need_config() -> Config:
        if settings.config is None:
            raise UserError("not available here (no configuration)")
        return settings.config

    @app.get("/api/v1/calendar", response_model=dict[str, Any], responses=_ERRORS,
             tags=["read"], dependencies=login_)
    def api_calendar(period: PeriodQ = None, agent: AgentQ = None) -> dict[str, Any]:
        """One agent's billing period day by day (local days of [tariff] timezone): the
        line's segments with their share of the day (`left`, `width` in %), tickets and
        the configured rule pack's deadlines as marks. Default: the current period."""
        return data.calendar(store, need_config(), period=period or None, agent=agent or None,
                             now_ms=settings.now_ms())

    @app.get("/calendar", response_class=HTMLResponse, include_in_schema=False)
    def calendar_page(request: Request, period: PeriodQ = None, agent: AgentQ = None) -> Response:
        if (r := page_login(request)) is not None:
            return r
        cal = data.calendar(store, need_config(), period=period or None, agent=agent or None,
                            now_ms=settings.now_ms())
        y, m = (int(x) for x in cal["period"].split("-"))
        prev = f"{y - 1:04d}-12" if m == 1 else f"{y:04d}-{m - 1:02d}"
        nxt = f"{y + 1:04d}-01" if m == 12 else f"{y:04d}-{m + 1:02d}"
        return _page(request, "calendar.html", {"cal": cal, "prev": prev, "next": nxt,
                                                "classes": data.CALENDAR_CLASSES})


    def latency_for(agent: str | None, range_: str) -> dict[str, Any]:
        from wanwitness.web import latency as lat
        name, names = data.pick_agent(store, agent or None)
        if name is None:
            return {"agent": None, "agents": names, "range": range_, "targets": []}
        return {**lat.series(store, agent=name, range_=range_, now_ms=settings.now_ms()),
                "agents": names}

    @app.get("/api/v1/latency", response_model=dict[str, Any], responses=_ERRORS,
             tags=["read"], dependencies=login_)
    def api_latency(agent: AgentQ = None, range_: RangeQ = "day") -> dict[str, Any]:
        """Round trips and loss per probe target over the last day, week, month or year
        (the heartbeats' summaries; a bucket without a heartbeat is missing, not zero):
        per bucket probes sent and lost, loss %, the fastest, typical and slowest answer
        in ms. Default agent: the first one heard from."""
        return latency_for(agent, range_)

    @app.get("/latency", response_class=HTMLResponse, include_in_schema=False)
    def latency_page(request: Request, agent: AgentQ = None, range_: RangeQ = "day") -> Response:
        if (r := page_login(request)) is not None:
            return r
        from wanwitness.web import latency as lat
        d = latency_for(agent, range_)
        charts = [{"target": t["target"], "role": t["role"], "svg": lat.svg(d, t, tz),
                   "sum": lat.summary(t)} for t in d["targets"]]
        return _page(request, "latency.html", {"lat": d, "charts": charts,
                                               "ranges": list(lat.RANGES)})

    def sheet_for(agent: str | None, start: str | None, lang: str | None) -> dict[str, Any]:
        from wanwitness.web import callsheet as cs
        conf = need_config()
        if start:
            cs.parse_start(start, tz, "start")  # a clear error naming the parameter
        return cs.build(store, conf, agent=agent or None, start=start or None,
                        lang=lang or conf.claim.lang, now_ms=settings.now_ms())

    @app.get("/api/v1/callsheet", response_model=dict[str, Any], responses=_ERRORS,
             tags=["read"], dependencies=login_)
    def api_callsheet(agent: AgentQ = None, start: Annotated[str | None, Query(max_length=80)] = None,
                      lang: LangQ = None) -> dict[str, Any]:
        """What to tell the ISP's support line about the outage going on now (or the one
        that started at `start`): the facts in `lang`, and what to note during the call."""
        return sheet_for(agent, start, lang)

    @app.get("/callsheet", response_class=HTMLResponse, include_in_schema=False)
    def callsheet_page(request: Request, agent: AgentQ = None,
                       start: Annotated[str | None, Query(max_length=80)] = None,
                       lang: LangQ = None) -> Response:
        if (r := page_login(request)) is not None:
            return r
        return _page(request, "callsheet.html", {"sheet": sheet_for(agent, start, lang)})

    @app.post("/callsheet/ticket", include_in_schema=False)
    def callsheet_ticket(request: Request, csrf: Annotated[str, Form(max_length=200)] = "",
                         agent: Annotated[str, Form(max_length=32)] = "",
                         start: Annotated[str, Form(max_length=80)] = "",
                         number: Annotated[str, Form(max_length=tk.NUMBER_MAX)] = "",
                         operator: Annotated[str, Form(max_length=tk.OPERATOR_MAX)] = "",
                         opened: Annotated[str, Form(max_length=64)] = "") -> Response:
        """The notes of the call: a ticket, linked to the outage the sheet was about
        (also a local_down, which is never linked by time)."""
        if (r := form_guard(request, csrf)) is not None:
            return r
        sheet = sheet_for(agent, start, None)
        if not number.strip() or not opened.strip():
            raise UserError("the ticket number and the time of the call are needed")
        conf = settings.config
        added = add_ticket(number, opened, channel="phone", operator=operator or None,
                           line=conf.line_of(sheet["agent"]) if conf is not None else None)
        if isinstance(sheet.get("open_seq"), int):
            tk.set_link(store, added, sheet["agent"], sheet["open_seq"], True)
        return RedirectResponse("/tickets", status_code=303)

    @app.get("/claim", response_class=HTMLResponse, include_in_schema=False)
    def claim_page(request: Request, period: PeriodQ = None, rules: RulesQ = None,
                   lang: LangQ = None, line: LineQ = None) -> Response:
        if (r := page_login(request)) is not None:
            return r
        from wanwitness.claims.build import pack_names
        conf = settings.config
        context: dict[str, Any] = {
            "packs": pack_names(), "langs": LANGS, "claim": None, "error": None,
            "lines": line_names(),
            "q": {"period": period or "", "line": line or "",
                  "rules": rules or (conf.claim.rules if conf else ""),
                  "lang": lang or (conf.claim.lang if conf else "en")}}
        if conf is not None and conf.lines and not line:
            context["q"]["line"] = line = conf.lines[0].name   # the first line, to begin with
        if conf is not None and line and line in conf.line_names():
            lconf = conf.for_line(line)
            context["q"]["rules"] = rules or lconf.claim.rules
            context["q"]["lang"] = lang or lconf.claim.lang
        try:
            result, _inputs, _language = claim_for(period, rules, lang, line)
        except UserError as e:
            context["error"] = str(e)
            return _page(request, "claim.html", context, 200)
        context["claim"] = result
        context["missing"] = make.missing_parties(result)
        context["q"]["period"] = result["period"]["label"]
        context["download"] = urlencode({"period": result["period"]["label"],
                                         "rules": result["rules"]["name"], "lang": result["lang"],
                                         **({"line": result["line"]} if result.get("line") else {})})
        return _page(request, "claim.html", context)

    # -- Prometheus ----------------------------------------------------------------
    registry = metrics.registry(store, now_ms=settings.now_ms, ingest=settings.ingest)

    @app.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        """For whoever may read the UI (a logged-in session; anyone on loopback without
        a password) and for a scraper sending the metrics token as a bearer token."""
        if not (logged_in(request) or auth.check_metrics_token(store, request.headers.get("authorization"))):
            how = ("send the token of `wanwitness web metrics-token` as a bearer token"
                   if auth.has_metrics_token(store) else
                   "set a token with `wanwitness web metrics-token` and send it as a bearer token")
            return PlainTextResponse(f"/metrics needs a login: {how}\n", status_code=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="wanwitness metrics"'})
        try:
            body = generate_latest(registry)
        except sa.exc.SQLAlchemyError as e:
            log.warning("web: /metrics: the store cannot be read: %s", db_reason(e))
            return PlainTextResponse(f"the store cannot be read: {db_reason(e)}\n", status_code=503)
        return Response(body, media_type=METRICS_MEDIA_TYPE)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    app.add_middleware(_Bugs)
    # Outermost last: the host check runs before anything reads the session.
    app.add_middleware(SessionMiddleware, secret_key=auth.session_secret(store),
                       session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE_S,
                       same_site="strict", https_only=settings.tls)
    if settings.loopback_only:
        # A page on another site cannot reach us through a DNS name it points at
        # 127.0.0.1 (DNS rebinding): only loopback names are served.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)
    return app


class _Bugs:
    """A bug in a route: one line to the user (JSON for the API, a page otherwise), the
    traceback in the collector's log; never a traceback in the browser."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.exception("web: %s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            text = f"internal error: {type(exc).__name__} (details in the collector's log)"
            response: Response
            if str(scope.get("path", "")).startswith("/api/"):
                response = JSONResponse({"detail": text}, status_code=500)
            elif scope.get("path") == "/metrics":
                response = PlainTextResponse(text + "\n", status_code=500)
            else:
                response = HTMLResponse("<!doctype html><title>Error</title><h1>That did not "
                                        f"work</h1><p>{text}</p>", status_code=500)
            await response(scope, receive, send)


def _safe_next(target: str) -> str:
    """Only a path on this site (an open redirect helps phishing)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
