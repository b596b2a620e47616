"""Password hashes in Mosquitto's format, so one credential works on both brokers.

Mosquitto 2.x (`mosquitto_passwd`, default `-H sha512-pbkdf2`) writes
`$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(password, salt)>`
with a 12-byte salt and a 64-byte key. The older `$6$<salt>$<SHA512(password + salt)>`
form (Mosquitto 1.x) is accepted by `check_password` too, so existing files keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

_SALT_BYTES = 12  # what mosquitto_passwd uses
_KEY_BYTES = 64  # SHA-512 output size
DEFAULT_ITERATIONS = 101  # mosquitto_passwd's default


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Hash `password` the way `mosquitto_passwd` does (PBKDF2-SHA512, `$7$` format)."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, _KEY_BYTES)
    return f"$7${iterations}${_b64(salt)}${_b64(key)}"


def check_password(password: str, hashed: str) -> bool:
    """True if `password` matches `hashed`; False for a wrong password or a malformed hash."""
    try:
        expected, actual = _digests(password.encode("utf-8"), hashed)
    except (ValueError, binascii.Error, TypeError, AttributeError, OverflowError):
        return False
    return hmac.compare_digest(expected, actual)


def new_secret() -> str:
    """A random password that survives URLs, shells and config files unquoted."""
    return secrets.token_urlsafe(24)


def _digests(password: bytes, hashed: str) -> tuple[bytes, bytes]:
    parts = hashed.strip().split("$")
    # A leading "$" gives an empty first part: ["", "7", iterations, salt, key].
    if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise ValueError("bad iteration count")
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        stored = base64.b64decode(parts[4], validate=True)
        if not salt or len(stored) != _KEY_BYTES:
            raise ValueError("bad salt or key length")
        return stored, hashlib.pbkdf2_hmac("sha512", password, salt, iterations, _KEY_BYTES)
    if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
        salt = base64.b64decode(parts[2], validate=True)
        stored = base64.b64decode(parts[3], validate=True)
        if not salt or len(stored) != _KEY_BYTES:
            raise ValueError("bad salt or key length")
        return stored, hashlib.sha512(password + salt).digest()
    raise ValueError("not a Mosquitto password hash")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
