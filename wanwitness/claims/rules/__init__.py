"""The rule packs: one module per jurisdiction or rule, each citing its legal source.

`names()` lists them, `get(name)` returns one (a `RulePack`, see base.py).
"""

from __future__ import annotations

from ...errors import UserError
from .base import Option, PackResult, RulePack
from .de_tkg58 import DeTkg58
from .hu_eszr import HuEszr
from .ke_outage_credit import KeOutageCredit
from .pro_rata import ProRata
from .ru_telematics import RuTelematics
from .uk_ofcom import UkOfcom

_PACKS: dict[str, type[RulePack]] = {p.name: p for p in (
    ProRata, DeTkg58, UkOfcom, HuEszr, RuTelematics, KeOutageCredit)}

__all__ = ["Option", "PackResult", "RulePack", "get", "names"]


def names() -> list[str]:
    return list(_PACKS)


def get(name: str) -> RulePack:
    try:
        return _PACKS[name]()
    except KeyError:
        raise UserError(f"unknown rule pack {name!r} (known: {', '.join(_PACKS)})") from None
