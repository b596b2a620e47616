"""Render a claim dict as a letter: Markdown, HTML or PDF, in one of five languages.

    render(claim, "pdf", "de") -> bytes

Also a small tool for the catalogs and for looking at the result:

    python -m wanwitness.claims.render --extract        # regenerate locale/wanwitness.pot
    python -m wanwitness.claims.render --update         # ... and merge it into every .po
    python -m wanwitness.claims.render --check          # untranslated or missing msgids
    python -m wanwitness.claims.render --sample DIR [--claim claim.json]
        # every language x format of the sample claim (or of claim.json, as printed by
        # `wanwitness claim --format json`) plus a PNG of every PDF page
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..errors import UserError
from .catalogs import CLAIMS_DIR, LANGUAGES, check_language, problems, translations, update_catalogs, write_template
from .letter import Letter, build_letter

FORMATS = ("md", "html", "pdf")
TEMPLATES_DIR = CLAIMS_DIR / "templates"
SAMPLE_CLAIM = TEMPLATES_DIR / "sample-claim.json"
PNG_SCALE = 1.5               # 1.5 x 72 dpi = 108 dpi: readable, small files

__all__ = ["FORMATS", "LANGUAGES", "render"]

# CommonMark: a backslash before any ASCII punctuation makes it a literal character.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")
# ... and a value that starts a line must not start a list ("2026. december 1." is an
# ordered list item to CommonMark, "- x" a bullet).
_MD_LIST_START = re.compile(r"^(\d+)([.)])|^([-+])(?=\s)")


class MdText(str):
    """Markdown that is already escaped (the finalizer leaves it alone)."""


def md_escape(value: Any) -> str:
    """Finalizer for every {{ value }} of the Markdown template: user text stays text."""
    if isinstance(value, MdText):
        return value
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).splitlines()))


def md_line(value: Any) -> MdText:
    """Filter for a value that starts a line: also keep it from starting a list."""
    text = md_escape(value)
    return MdText(_MD_LIST_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", text))


def _environment(fmt: str, lang: str) -> Environment:
    common: dict[str, Any] = dict(loader=FileSystemLoader(TEMPLATES_DIR), undefined=StrictUndefined,
                                  extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    if fmt == "html":
        env = Environment(autoescape=True, **common)
    else:
        # Markdown has no autoescape: every value goes through md_escape instead.
        env = Environment(autoescape=False, finalize=md_escape, keep_trailing_newline=True, **common)
        env.filters["line"] = md_line
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


def render_letter(letter: Letter, fmt: str) -> bytes:
    if fmt == "pdf":
        from .pdf import letter_pdf
        return letter_pdf(letter)
    text = _environment(fmt, letter.lang).get_template(f"letter.{fmt}").render(letter=letter)
    if fmt == "md":
        text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return text.encode("utf-8")


def render(claim: dict[str, Any], fmt: str, lang: str) -> bytes:
    """The claim letter in `fmt` (md | html | pdf) and `lang` (en | de | hu | ru | sw)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown letter format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_language(lang)
    return render_letter(build_letter(claim, lang), fmt)


def pdf_pages_png(pdf: bytes, scale: float = PNG_SCALE) -> list[bytes]:
    """Each page of a PDF as PNG bytes (pypdfium2 + Pillow, the test extras)."""
    try:
        import pypdfium2
    except ImportError:
        raise UserError("PNG pages need pypdfium2 and Pillow: pip install 'wanwitness[test]' pillow") from None
    doc = pypdfium2.PdfDocument(pdf)
    out = []
    try:
        for i in range(len(doc)):
            image = doc[i].render(scale=scale).to_pil()   # to_pil() needs Pillow
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            out.append(buf.getvalue())
    except ImportError:
        raise UserError("PNG pages need Pillow: pip install pillow") from None
    finally:
        doc.close()
    return out


def write_samples(claim: dict[str, Any], out_dir: Path) -> list[Path]:
    """letter-<lang>.<fmt> for every language and format, and letter-<lang>-p<n>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for lang in LANGUAGES:
        letter = build_letter(claim, lang)
        for fmt in FORMATS:
            data = render_letter(letter, fmt)
            path = out_dir / f"letter-{lang}.{fmt}"
            path.write_bytes(data)
            written.append(path)
            if fmt == "pdf":
                for n, png in enumerate(pdf_pages_png(data), 1):
                    page = out_dir / f"letter-{lang}-p{n}.png"
                    page.write_bytes(png)
                    written.append(page)
    return written


def _load_claim(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a claim JSON file ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a claim JSON file (expected an object)")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wanwitness.claims.render",
                                 description="Letter catalogs and sample letters.")
    ap.add_argument("--extract", action="store_true", help="regenerate locale/wanwitness.pot")
    ap.add_argument("--update", action="store_true", help="regenerate the .pot and merge it into every .po")
    ap.add_argument("--check", action="store_true", help="list missing or untranslated msgids")
    ap.add_argument("--sample", metavar="DIR", type=Path,
                    help="write every language and format of a claim to DIR, with PNG pages")
    ap.add_argument("--claim", metavar="FILE", type=Path,
                    help="claim JSON for --sample (default: the built-in sample claim)")
    args = ap.parse_args(argv)
    if not (args.extract or args.update or args.check or args.sample):
        ap.error("nothing to do: give --extract, --update, --check or --sample DIR")
    try:
        if args.extract or args.update:
            print(write_template())
        if args.update:
            for path in update_catalogs():
                print(path)
        if args.check:
            gaps = problems()
            for line in gaps:
                print(line)
            if gaps:
                return 1
        if args.sample:
            for path in write_samples(_load_claim(args.claim or SAMPLE_CLAIM), args.sample):
                print(path)
    except UserError as e:
        print(f"wanwitness: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
