"""Who may use the web UI: the password, the session key, login back-off, CSRF.

- The password is set with `wanwitness web password` and kept in the store as a
  PBKDF2-SHA512 hash (the broker's `$7$` format with many more iterations). Without
  one, the UI is open to whoever can reach it, which `collect` allows on loopback only.
- Sessions are a signed cookie (Starlette's SessionMiddleware, itsdangerous) with a key
  kept in the store; setting a new password makes a new key, which ends every session.
- Every session, logged in or not, carries a CSRF token: each form posts it back, each
  API call that changes something sends it as `X-CSRF-Token`.
- Failed logins from one address wait longer and longer (`Backoff`).
- Prometheus scrapes /metrics with a bearer token (`wanwitness web metrics-token`),
  kept in the store as its SHA-256: the token is 256 random bits, so a slow hash would
  only cost every scrape time and guard nothing (no dictionary holds it).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from wanwitness.broker.passwords import check_password, hash_password
from wanwitness.errors import UserError
from wanwitness.store import Store

PASSWORD_KEY = "web.password_hash"
SECRET_KEY = "web.session_secret"
# OWASP's 2023 figure for PBKDF2-HMAC-SHA512: ~0.2 s per login on a small home server.
ITERATIONS = 210_000
MIN_PASSWORD = 8
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"


def set_password(store: Store, password: str) -> None:
    """Store the web password's hash and a new session key (every session ends)."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the web password needs at least {MIN_PASSWORD} characters")
    store.set_setting(PASSWORD_KEY, hash_password(password, iterations=ITERATIONS))
    new_session_secret(store)


def new_session_secret(store: Store) -> None:
    """A new key for session cookies: every cookie signed before is void (on the
    collector's next start; a running one also checks the password mark)."""
    store.set_setting(SECRET_KEY, secrets.token_urlsafe(32))


def has_password(store: Store) -> bool:
    return bool(store.setting(PASSWORD_KEY))


def check(store: Store, password: str) -> bool:
    hashed = store.setting(PASSWORD_KEY)
    return bool(hashed) and check_password(password, hashed or "")


def session_secret(store: Store) -> str:
    """The key that signs session cookies, made on first use."""
    key = store.setting(SECRET_KEY)
    if not key:
        key = secrets.token_urlsafe(32)
        store.set_setting(SECRET_KEY, key)
    return key


METRICS_TOKEN_KEY = "web.metrics_token_hash"
MIN_METRICS_TOKEN = 16
# RFC 6750's b64token: what an Authorization: Bearer header can carry as it is.
_BEARER = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def _token_hash(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def set_metrics_token(store: Store, token: str | None = None) -> str:
    """Store the hash of the token Prometheus sends to /metrics (a new random one when
    `token` is None) and return the token; the token before stops working."""
    if token is None:
        token = secrets.token_urlsafe(32)
    if len(token) < MIN_METRICS_TOKEN:
        raise UserError(f"the metrics token needs at least {MIN_METRICS_TOKEN} characters")
    if not _BEARER.fullmatch(token):
        raise UserError("the metrics token may hold only letters, digits and - . _ ~ + / "
                        "(and = at its end): it is sent in an HTTP header")
    store.set_setting(METRICS_TOKEN_KEY, _token_hash(token))
    return token


def remove_metrics_token(store: Store) -> None:
    store.set_setting(METRICS_TOKEN_KEY, "")


def has_metrics_token(store: Store) -> bool:
    return bool(store.setting(METRICS_TOKEN_KEY))


def check_metrics_token(store: Store, authorization: str | None) -> bool:
    """Whether an `Authorization` header carries the metrics token (`Bearer <token>`)."""
    hashed = store.setting(METRICS_TOKEN_KEY)
    if not hashed or not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(_token_hash(token.strip()), hashed)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


@dataclass
class _Failures:
    count: int
    until: float  # monotonic time before which this address may not try again


class Backoff:
    """Failed logins per client address: the first `free` failures cost nothing, each
    one after that doubles the wait (1 s, 2 s, 4 s, ... up to `cap_s`). A success clears
    the address. Addresses not seen for a day are forgotten (the table stays small)."""

    def __init__(self, *, free: int = 3, cap_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.cap_s = cap_s
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def wait_s(self, address: str) -> int:
        """Seconds `address` must still wait before its next try (0: it may try now)."""
        with self._lock:
            f = self._failures.get(address)
            if f is None:
                return 0
            return max(0, math.ceil(f.until - self._clock()))

    def failed(self, address: str) -> int:
        """Count a failure; returns the wait it costs (s)."""
        now = self._clock()
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures = {a: f for a, f in self._failures.items()
                                  if f.until > now - 86_400}
            f = self._failures.setdefault(address, _Failures(0, now))
            f.count += 1
            over = f.count - self.free
            wait = 0.0 if over <= 0 else min(self.cap_s, 2.0 ** (over - 1))
            f.until = now + wait
            return math.ceil(wait)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
