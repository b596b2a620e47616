"""`wanwitness deploy`: put the agent and its config.json onto a board over USB.

What ends up on the board's flash (and nothing else is touched: the outbox stays):

| file            | from                                                        |
|-----------------|-------------------------------------------------------------|
| `boot.py`       | firmware/boot.py                                            |
| `main.py`       | agent/main.py, as source (the board runs it by name)        |
| `<module>.mpy`  | every other agent/*.py, compiled by mpy-cross for the board |
| `config.json`   | the agent's config from `wanwitness agent add NAME`         |
| `wanwitness.json` | what was deployed: version, agent, profile, file hashes   |

The board's own MicroPython says which bytecode it takes (`sys.implementation._mpy`:
version and native architecture), so the .mpy files always match it. Only files whose
SHA-256 on the board differs are copied; each is written beside its old copy and
renamed over it (littlefs renames atomically: a cut cable leaves the old file or the
new, never half of one); afterwards every file's hash is read back from the board.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from wanwitness import __version__
from wanwitness.boards import board_config
from wanwitness.boards.build import agent_sources, compile_agent
from wanwitness.boards.link import BoardInfo, BoardLink
from wanwitness.errors import UserError
from wanwitness.resources import agent_dir, build_dir, firmware_dir

MANIFEST = "wanwitness.json"
SPARE_BYTES = 16 * 1024  # leave the outbox room to breathe after the copy


@dataclass
class BoardFile:
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class DeployResult:
    port: str
    agent: str
    profile: str
    info: BoardInfo
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _mpy_header_ok(mpy: bytes, info: BoardInfo) -> bool:
    # .mpy header: b"M", version, features (native arch in bits 2-7, sub-version in bits
    # 0-1, both 0 for plain bytecode: then only the version must match)
    if len(mpy) < 4 or mpy[0] != ord("M") or mpy[1] != info.mpy_version:
        return False
    return mpy[2] == 0 or (mpy[2] & 3) == info.mpy_sub


def frozen_agent(link: BoardLink) -> bool:
    """True when the board's firmware has the agent frozen in (firmware/manifest.py):
    then its modules must not be copied, a file would shadow the frozen module."""
    names = set(link.exec("help('modules')", timeout=30).split())
    return {"app", "detector", "outbox", "mqtt"} <= names


def board_files(info: BoardInfo, config_bytes: bytes, frozen: bool = False) -> list[BoardFile]:
    """Everything deploy puts on a board with this MicroPython, in copy order (config
    and main.py last: a board reset in the middle boots the old agent, not half a new one)."""
    out_dir = build_dir(f"deploy-{info.arch or 'bytecode'}")
    mpys = [] if frozen else compile_agent(out_dir, march=info.arch)
    if mpys and not _mpy_header_ok(mpys[0].read_bytes()[:4], info):
        raise UserError(
            f"the board runs MicroPython {info.version} (bytecode .mpy v{info.mpy_version}."
            f"{info.mpy_sub}), which this mpy-cross cannot compile for: flash MicroPython "
            "1.23 or newer with `wanwitness flash`")
    files = [BoardFile(p.name, p.read_bytes()) for p in mpys]
    files.append(BoardFile("boot.py", (firmware_dir() / "boot.py").read_bytes()))
    files.append(BoardFile("config.json", config_bytes))
    files.append(BoardFile("main.py", (agent_dir() / "main.py").read_bytes()))
    return files


_HASHES = """
import os, hashlib, binascii
def _h(n):
    try:
        f = open(n, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        k = f.readinto(b)
        if not k:
            break
        h.update(memoryview(b)[:k])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(repr(({n: _h(n) for n in %r}, os.listdir())))
"""


def board_hashes(link: BoardLink, names: list[str]) -> tuple[dict[str, str | None], list[str]]:
    import ast
    out = link.exec(_HASHES % (names,), timeout=60)
    hashes, listing = ast.literal_eval(out.strip().splitlines()[-1])
    return hashes, listing


def choose_profile(info: BoardInfo, board: str | None):
    from wanwitness.boards import profiles as boards
    if board:
        profile = boards.load_profile(board)
        if profile.chip != info.chip:
            right = [n for n in boards.profile_names() if boards.load_profile(n).chip == info.chip]
            raise boards.WrongBoard(f"the board on this port is an {info.chip.upper()}, but "
                                    f"{boards.WrongBoard.BOARD} is for an {profile.chip.upper()}"
                                    + (f"; {boards.WrongBoard.ADVICE}" if right else ""),
                                    profile.name, right[:1])
        return profile
    for name in boards.profile_names():
        profile = boards.load_profile(name)
        if profile.chip == info.chip:
            return profile
    raise UserError(f"no board profile for a {info.chip} (known: "
                    f"{', '.join(boards.profile_names())})")


def deploy(port: str, agent: str, config_path: Path, *, board: str | None = None,
           reset: bool = True, watch_s: float = 0.0,
           log: Callable[[str], None] = print) -> DeployResult:
    config = board_config.read(config_path)
    if config.get("id") != agent:
        raise UserError(f"{config_path} is the config of agent {config.get('id')!r}, not "
                        f"{agent!r}: give --config, or create it with `wanwitness agent add {agent}`")
    board_config.check(config_path, config)
    if not (config.get("wifi") or {}).get("ssid"):
        log(f"note: {config_path} has no wifi.ssid: the board will not get online "
            "(fine on the virtual board)")
    config_bytes = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
    from wanwitness.boards import profiles as boards
    with BoardLink(port) as link:
        log(f"{port}: connecting to MicroPython")
        link.enter()
        was_running = link.agent_running()
        if was_running:
            log(f"{port}: the agent is running: rebooting into maintenance for the copy")
            link.maintenance("deploy")
        try:
            info = link.info()
            kind = "virtual board" if info.virtual else info.chip.upper()
            log(f"{port}: {kind}, MicroPython {info.version}, bytecode for {info.arch or 'any'}, "
                f"{info.fs_free // 1024} KiB free of {info.fs_total // 1024} KiB")
            profile = choose_profile(info, board)
            problems = boards.check_agent_config(profile, config)
            if problems:
                raise UserError(f"{config_path} does not fit board {profile.name}: {problems[0]}")
            frozen = frozen_agent(link)
            if frozen:
                log(f"{port}: the agent is frozen into this firmware: copying config and main.py only")
            files = board_files(info, config_bytes, frozen)
            names = [f.name for f in files]
            modules = {p.stem for p in agent_sources()}
            before, listing = board_hashes(link, names)
            # A module.py left from a hand copy would shadow module.mpy, and any copy of a
            # module shadows the frozen one: remove them
            stale = sorted(n for n in listing if (n.endswith(".py") and n[:-3] in modules)
                           or (frozen and n.endswith(".mpy") and n[:-4] in modules))
            todo = [f for f in files if before.get(f.name) != f.sha256]
            need = sum(len(f.data) for f in todo) + SPARE_BYTES
            if need > info.fs_free:
                raise UserError(f"not enough flash on the board: the copy needs {need // 1024} KiB, "
                                f"{info.fs_free // 1024} KiB are free")
            result = DeployResult(port, agent, profile.name, info)
            for name in stale:
                link.exec(f"import os\nos.remove({name!r})")
                result.removed.append(name)
                log(f"  removed {name} (it would shadow the agent's own module)")
            for f in files:
                if f not in todo:
                    result.unchanged.append(f.name)
                    continue
                tmp = f.name + ".new"
                link.t.fs_writefile(tmp, f.data)
                # littlefs renames over the old file atomically; FAT cannot, remove it first
                link.exec(f"import os\ntry:\n os.rename({tmp!r}, {f.name!r})\nexcept OSError:\n"
                          f" os.remove({f.name!r})\n os.rename({tmp!r}, {f.name!r})")
                result.copied.append(f.name)
                log(f"  copied {f.name} ({len(f.data)} bytes)")
            after, _ = board_hashes(link, names)
            bad = [f.name for f in files if after.get(f.name) != f.sha256]
            if bad:
                raise UserError(f"{port}: verification failed: {', '.join(bad)} on the board differ "
                                "from what was sent; run deploy again")
            manifest = {"version": __version__, "agent": agent, "profile": profile.name,
                        "deployed": datetime.now(UTC).isoformat(timespec="seconds"),
                        "files": {f.name: f.sha256 for f in files}}
            link.t.fs_writefile(MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
            log(f"{port}: {len(result.copied)} file(s) copied, {len(result.unchanged)} unchanged, "
                f"all {len(files)} verified by SHA-256")
            if reset:
                link.reset()
                log(f"{port}: board reset: the agent is starting")
                if watch_s > 0:
                    link.watch(watch_s, lambda text: log(f"  board| {text}"))
                log(f"watch it: wanwitness console --port {port}")
        except UserError:
            if was_running and reset:  # the board goes back to the agent it had
                link.reset()
                log(f"{port}: deploy stopped; board reset: it starts what is on it")
            raise
    return result
