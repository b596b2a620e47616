"""`./dev mp32`: a 32-bit unix MicroPython with the agent, asyncio and the virtual board's
modules frozen in (wanwitness/firmware/manifest_unix32.py), built from source.

An ESP32 is a 32-bit machine that runs the agent from firmware: pointers and small ints are
4 bytes, frozen bytecode stays in flash. The 64-bit wheel's `micropython` is neither, so
the agent's tests and the heap bench also run on this build. It has no TLS
(MICROPY_PY_SSL=0: mbedtls is not in the vendored source); tests of TLS stay on the wheel.

The source, first found wins:
  1. $WANWITNESS_MICROPYTHON_SRC: a MicroPython source tree or release tarball (v1.28.0),
  2. third_party/micropython/micropython-1.28.0-unix.tar.gz (vendored, see its README.md).
The build lives in build/mp32/ (gitignored) and is redone only when an input changed (the
source, the manifest, a frozen module, this file). The last line printed is the binary.

    python -m testing.mp32 [--quiet]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ROOT / "third_party" / "micropython" / "micropython-1.28.0-unix.tar.gz"
MANIFEST = ROOT / "wanwitness" / "firmware" / "manifest_unix32.py"
CENSUS = ROOT / "testing" / "heap_census.c"
BUILD = ROOT / "build" / "mp32"
BINARY = BUILD / "micropython32"
STAMP = BUILD / "micropython32.sha256"
SRC_ENV = "WANWITNESS_MICROPYTHON_SRC"
OFFICIAL = ("https://micropython.org/download/ (the source release micropython-1.28.0.tar.xz, "
            "or `git clone --branch v1.28.0 https://github.com/micropython/micropython`)")
MAKE_FLAGS = ["VARIANT=standard", "BUILD=build-32", "MICROPY_FORCE_32BIT=1",
              "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0", "MICROPY_PY_FFI=0"]


class BuildError(Exception):
    """What went wrong, in one line for the user."""


def source() -> Path:
    """The MicroPython source to build from: a tree or a tarball."""
    named = os.environ.get(SRC_ENV)
    if named:
        path = Path(named).expanduser().resolve()
        if not path.exists():
            raise BuildError(f"{SRC_ENV}={named} does not exist; get the official source "
                             f"release from {OFFICIAL}")
        return path
    if VENDORED.is_file():
        return VENDORED
    raise BuildError(f"no MicroPython source: set {SRC_ENV} to a source tree or tarball of "
                     f"v1.28.0, from {OFFICIAL}")


def frozen_sources() -> list[Path]:
    """The files the manifest freezes (the `module(...)` lines), read without running it."""
    files = []
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("module(") and 'base_path="' in line:
            name = line.split('"')[1]
            base = line.split('base_path="')[1].split('"')[0]
            files.append((MANIFEST.parent / base / name).resolve())
    return files


def _hash_tree(h: hashlib._Hash, tree: Path) -> None:
    for p in sorted(tree.rglob("*")):
        rel = p.relative_to(tree)
        if p.is_file() and not any(part.startswith("build") for part in rel.parts):
            st = p.stat()
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())


def inputs_digest(src: Path) -> str:
    h = hashlib.sha256()
    if src.is_file():
        h.update(hashlib.sha256(src.read_bytes()).digest())
    else:
        for sub in ("py", "extmod", "ports/unix"):
            if (src / sub).is_dir():
                _hash_tree(h, src / sub)
    for p in [MANIFEST, CENSUS, Path(__file__).resolve(), *frozen_sources()]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    h.update(" ".join(MAKE_FLAGS).encode())
    return h.hexdigest()


def _unpack(tarball: Path) -> Path:
    """The tarball unpacked under build/mp32/src (again only when it changed)."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    dest = BUILD / "src"
    mark = dest / ".tarball.sha256"
    if mark.is_file() and mark.read_text() == digest:
        tops = [p for p in dest.iterdir() if p.is_dir()]
        if len(tops) == 1:
            return tops[0]
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tf.extractall(dest, filter="data")
        else:
            tf.extractall(dest)  # noqa: S202 (our own vendored tarball, or the user's)
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1 or not (tops[0] / "ports" / "unix").is_dir():
        raise BuildError(f"{tarball} is not a MicroPython source tarball (no ports/unix)")
    mark.write_text(digest)
    return tops[0]


_CENSUS_MARK = "/* wanwitness: heap census */"
_DUMP = "void gc_dump_alloc_table(const mp_print_t *print) {\n"


def _add_census(tree: Path) -> None:
    """micropython.mem_info(1) prints a census of the heap by type instead of its block
    map (testing/heap_census.c): only in our own unpacked copy of the source, never in a
    tree of the user's ($WANWITNESS_MICROPYTHON_SRC), which builds unchanged."""
    gc_c = tree / "py" / "gc.c"
    text = gc_c.read_text()
    if _CENSUS_MARK in text:
        return
    if text.count(_DUMP) != 1:
        raise BuildError(f"{gc_c}: no gc_dump_alloc_table() to add the heap census to")
    text = text.replace(_DUMP, f'{_CENSUS_MARK}\n#include "{CENSUS}"\n{_DUMP}'
                        "    census_print(print);\n    return;\n")
    gc_c.write_text(text)


def census_built() -> bool:
    """True when the build's mem_info(1) prints the census (built from a tarball)."""
    return source().is_file()


def _make(args: list[str], log: Path, quiet: bool) -> None:
    with log.open("a") as out:
        out.write("$ make " + " ".join(args) + "\n")
        out.flush()
        proc = subprocess.run(["make", *args], stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        if not quiet:
            print("\n".join(tail), file=sys.stderr)
        raise BuildError(f"make {args[1] if len(args) > 1 else ''} failed "
                         f"(full log: {log}); the 32-bit build needs Debian gcc-multilib")


def build(quiet: bool = False) -> Path:
    """Builds (when needed) and returns the 32-bit binary's path."""
    src = source()
    digest = inputs_digest(src)
    if BINARY.is_file() and STAMP.is_file() and STAMP.read_text() == digest:
        return BINARY
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is missing: apt-get install build-essential gcc-multilib")
    BUILD.mkdir(parents=True, exist_ok=True)
    tree = _unpack(src) if src.is_file() else src
    if src.is_file():
        _add_census(tree)
    log = BUILD / "build.log"
    log.write_text("")
    if not quiet:
        print(f"mp32: building a 32-bit MicroPython from {src} (about a minute; log {log})",
              file=sys.stderr)
    no_mplib = BUILD / "no-micropython-lib"  # the Makefile only checks that it exists
    no_mplib.mkdir(exist_ok=True)
    (no_mplib / "README.md").write_text("micropython-lib is not used by this build\n")
    jobs = f"-j{min(os.cpu_count() or 1, 2)}"
    _make(["-C", str(tree / "mpy-cross"), jobs], log, quiet)
    _make(["-C", str(tree / "ports" / "unix"), jobs, *MAKE_FLAGS, f"MPY_LIB_DIR={no_mplib}",
           f"FROZEN_MANIFEST={MANIFEST}"], log, quiet)
    built = tree / "ports" / "unix" / "build-32" / "micropython"
    tmp = BINARY.with_name(f".{BINARY.name}.{os.getpid()}.tmp")
    shutil.copy2(built, tmp)
    os.replace(tmp, BINARY)
    STAMP.write_text(digest)
    return BINARY


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./dev mp32", description=__doc__.splitlines()[0])
    ap.add_argument("--quiet", action="store_true", help="no progress lines, only the path")
    args = ap.parse_args(argv)
    try:
        path = build(quiet=args.quiet)
    except BuildError as e:
        print(f"mp32: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
