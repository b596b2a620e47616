"""The letter's gettext catalogs: load them, regenerate the template, find the gaps.

The catalogs are plain .po files (English msgids) under `claims/locale/`; they are
compiled in memory when loaded, so no .mo file has to be built or committed.
`extract()` reads the msgids from the letter's sources with Babel's extractor; the
tests compare it with every .po so that a new or changed string cannot go untranslated.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir, extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from babel.support import NullTranslations, Translations

from .. import __version__
from ..errors import UserError

DOMAIN = "wanwitness"
LANGUAGES = ("en", "de", "hu", "ru", "sw")
SOURCE_LANGUAGE = "en"            # the msgids are the English text
CLAIMS_DIR = Path(__file__).resolve().parent
CALLSHEET_SOURCES = (CLAIMS_DIR.parent / "web" / "callsheet.py",)
LOCALE_DIR = CLAIMS_DIR / "locale"
POT_PATH = LOCALE_DIR / f"{DOMAIN}.pot"

# Which files hold translatable strings (paths relative to CLAIMS_DIR): the letter's
# own modules, and the statements (N_) that the builder and the rule packs write for
# the letter; their notes, for the user only, are never extracted.
_METHOD_MAP = [
    ("letter.py", "python"),
    ("build.py", "python"),
    ("rules/**.py", "python"),
    ("pdf.py", "python"),
    ("render.py", "python"),
    ("templates/**.html", "jinja2"),
    ("templates/**.md", "jinja2"),
]


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def check_language(lang: str) -> str:
    if lang not in LANGUAGES:
        raise UserError(f"unknown language {lang!r}: choose one of {', '.join(LANGUAGES)}")
    return lang


def read_catalog(lang: str) -> Catalog:
    path = po_path(lang)
    try:
        with path.open("rb") as f:
            return read_po(f, locale=lang, domain=DOMAIN)
    except OSError as e:
        raise UserError(f"letter catalog for {lang!r} not readable: {path}: {e.strerror}") from None


@cache
def translations(lang: str) -> NullTranslations:
    """gettext for `lang`: the .po compiled to an in-memory .mo (fuzzy entries skipped)."""
    check_language(lang)
    if lang == SOURCE_LANGUAGE:
        return NullTranslations()
    buf = io.BytesIO()
    write_mo(buf, read_catalog(lang))
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)


def N_(msgid: str) -> str:
    """Mark a string for extraction; it is translated where it is used."""
    return msgid


def extract() -> Catalog:
    """Every msgid used by the letter's code and templates, as a template catalog."""
    cat = Catalog(project="wanwitness", version=__version__, domain=DOMAIN, locale=None, charset="utf-8",
                  copyright_holder="the wanwitness authors")
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"},
               "templates/**.md": {"extensions": "jinja2.ext.i18n"}}
    for filename, lineno, message, comments, context in extract_from_dir(
            str(CLAIMS_DIR), _METHOD_MAP, options, strip_comment_tags=True):
        cat.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    # The call sheet (web UI and `wanwitness callsheet`) speaks the letters' languages
    # from the same catalogs.
    for path in CALLSHEET_SOURCES:
        for lineno, message, comments, context in extract_from_file(
                "python", str(path), strip_comment_tags=True):
            cat.add(message, None, [(f"../{path.parent.name}/{path.name}", lineno)],
                    auto_comments=comments, context=context)
    return cat


def write_template() -> Path:
    """Regenerate locale/wanwitness.pot from the sources."""
    buf = io.BytesIO()
    write_po(buf, extract(), width=88, include_lineno=False)
    POT_PATH.parent.mkdir(parents=True, exist_ok=True)
    POT_PATH.write_bytes(buf.getvalue())
    return POT_PATH


def update_catalogs() -> list[Path]:
    """Merge the template into every .po: new msgids arrive with an empty msgstr (which
    `problems()` reports until someone translates them), stale ones become obsolete."""
    template = extract()
    written = []
    for lang in LANGUAGES:
        if lang == SOURCE_LANGUAGE:
            continue
        cat = read_catalog(lang)
        cat.update(template, no_fuzzy_matching=True)
        buf = io.BytesIO()
        write_po(buf, cat, width=88, ignore_obsolete=True, include_lineno=False)
        po_path(lang).write_bytes(buf.getvalue())
        written.append(po_path(lang))
    return written


def problems() -> list[str]:
    """What keeps the catalogs from matching the sources, one line each (empty: none)."""
    out = []
    wanted = {m.id: m for m in extract() if m.id}
    for lang in LANGUAGES:
        if lang == SOURCE_LANGUAGE:
            continue
        cat = read_catalog(lang)
        for msgid, msg in wanted.items():
            have = cat.get(msgid, msg.context)
            if have is None:
                out.append(f"{lang}: missing {msgid!r}")
            elif not have.string or (isinstance(have.string, tuple) and not all(have.string)):
                out.append(f"{lang}: untranslated {msgid!r}")
            elif have.fuzzy:
                out.append(f"{lang}: fuzzy {msgid!r}")
            else:
                # Babel's checkers: a translation must keep the msgid's %(name)s fields.
                for err in have.check(cat):
                    out.append(f"{lang}: {msgid!r}: {err}")
    return out
