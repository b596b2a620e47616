"""A claim from the store as the CLI and the web UI both make it: which rule pack and
options, and the claim encoded in one of the output formats."""

from __future__ import annotations

from typing import Any

from wanwitness.config import Config
from wanwitness.errors import UserError

FORMATS = ("json", "csv", "md", "html", "pdf")
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8",
               "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8",
               "pdf": "application/pdf"}


def choose_pack(conf: Config, rules_name: str | None, options: dict[str, str],
                *, how: str = "--rules NAME") -> tuple[Any, dict[str, Any]]:
    """The rule pack named (else `[claim] rules`) and its parsed options: the config's
    `[claim.options]` when it is the configured pack, with `options` over them."""
    from wanwitness.claims import build as b
    configured = conf.claim.rules
    name = rules_name or configured
    if not name:
        raise UserError(f"no rule pack chosen: pass {how} or set [claim] rules in "
                        f"{conf.path} (rule packs: {', '.join(b.pack_names())})")
    pack = b.load_pack(name)
    # [claim.options] belong to the configured pack; another pack gets only the ones given.
    raw: dict[str, str | list[str]] = dict(conf.claim.options) if name == configured else {}
    raw.update(options)
    return pack, pack.parse_options(raw)


def encode(claim: dict[str, Any], fmt: str, lang: str) -> bytes:
    """The claim as JSON or CSV (for checking), or its letter (md, html, pdf)."""
    from wanwitness.claims.build import to_json
    if fmt == "json":
        return to_json(claim).encode()
    if fmt == "csv":
        from wanwitness.claims.csvout import to_csv
        return to_csv(claim).encode()
    from wanwitness.claims.render import render
    return render(claim, fmt, lang)


def missing_parties(claim: dict[str, Any]) -> list[str]:
    """What a letter needs that the config does not say (`[customer] name`, ...)."""
    return [f"[{p}] name" for p in ("customer", "isp") if not claim[p]["name"]]
