"""A systemd unit for `wanwitness collect`: render it, install it, uninstall it.

Nothing here runs systemctl: `install` and `uninstall` write or remove one file and
return the commands the user runs next (they act on a live service manager, which the
user should see happen).

Two modes:

- System (`/etc/systemd/system/wanwitness.service`, needs root). The service runs as a
  *dynamic* user (`DynamicUser=yes`) rather than a named system account. Why: there is
  no account to create or to remove, so install and uninstall stay a single file on any
  distribution; systemd allocates the UID at start, creates `/var/lib/wanwitness`
  (`StateDirectory=`) owned by it and fixes that ownership if the UID changes; and the
  dynamic user can own nothing outside that directory, so the ledger is the only thing
  the collector can write. The price: files the service reads must not need a known UID.
  The config file is therefore handed over with `LoadCredential=` (systemd reads it as
  root and gives the service a private copy), so it may stay readable by root only; it
  is read at each start. The store is explicit: `--db sqlite:////var/lib/wanwitness/
  wanwitness.db` unless `--db` or the config's `[store] url` says otherwise, and the XDG
  variables point platformdirs into the state directory (`XDG_DATA_HOME=/var/lib` makes
  its data dir exactly `/var/lib/wanwitness`), so no default path lands in a read-only
  or missing home.
- User (`~/.config/systemd/user/wanwitness.service`, `systemctl --user`). The ledger is
  in the user data dir (platformdirs), the only writable path (`ProtectHome=read-only`,
  `ReadWritePaths=`). A user manager can set up these mount namespaces only inside a
  user namespace, hence `PrivateUsers=yes` (see systemd.exec(5)); where unprivileged
  user namespaces are forbidden (some hardened kernels, Ubuntu >= 23.10's AppArmor
  restriction) the user service fails with status 226/NAMESPACE: use the system mode
  there. Settings that systemd.exec(5) lists as system-only (`ProtectControlGroups=`,
  `RemoveIPC=`, `DynamicUser=`, ...) are left out.

Values are written per systemd.syntax(7): `%` doubled (specifiers), `$` doubled in
command arguments (variable expansion), items with other than plain path characters
double-quoted with C escapes; control characters are refused.
"""

from __future__ import annotations

import os
import string
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from wanwitness import config as cfg
from wanwitness.errors import UserError

SERVICE = "wanwitness"
UNIT_NAME = f"{SERVICE}.service"
# A unit file with this exact line was written by us: only such a file is replaced
# without --force or removed by uninstall.
MARKER = "# wanwitness-managed-unit: written by `wanwitness service install`; " \
         "`wanwitness service uninstall` removes it."
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_STATE_ROOT = Path("/var/lib")  # where StateDirectory= lives for system units
SYSTEM_DATA_DIR = SYSTEM_STATE_ROOT / SERVICE
DB_FILE = "wanwitness.db"
CONFIG_CREDENTIAL = "config.toml"
# ProtectHome= hides or freezes these; the system service must not need anything below them.
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
# PrivateTmp= gives the service its own, empty /tmp and /var/tmp.
PRIVATE_TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))
RESTART_SEC = 5


class Installed(NamedTuple):
    path: Path            # the unit file written
    commands: list[str]   # what the user runs next
    notes: list[str]      # things worth knowing, one line each


class Uninstalled(NamedTuple):
    path: Path
    commands: list[str]
    notes: list[str]


# --- paths --------------------------------------------------------------------------

def unit_path(user_mode: bool, unit_dir: Path | None = None) -> Path:
    """Where the unit goes; `unit_dir` replaces the directory (tests, staging)."""
    if unit_dir is not None:
        return Path(unit_dir) / UNIT_NAME
    if not user_mode:
        return SYSTEM_UNIT_DIR / UNIT_NAME
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"  # XDG: relative = unset
    return base / "systemd" / "user" / UNIT_NAME


def user_data_dir() -> Path:
    from platformdirs import user_data_dir as data_dir
    return Path(data_dir(SERVICE, appauthor=False))


def user_config_file() -> Path:
    from platformdirs import user_config_dir
    return Path(user_config_dir(SERVICE, appauthor=False)) / "config.toml"


def default_exe() -> list[str]:
    """This interpreter running this package. Not resolved: a venv's python is a symlink
    whose own location is what makes it the venv's."""
    if not sys.executable:
        raise UserError("service install: cannot tell which Python runs wanwitness "
                        "(sys.executable is empty)")
    return [os.path.abspath(sys.executable), "-m", SERVICE]


def systemctl(user_mode: bool) -> str:
    return "systemctl --user" if user_mode else "systemctl"


# --- quoting (systemd.syntax(7)) ------------------------------------------------------

# Characters that need no quoting in a unit value. `$`, `{`, `}` are plain to the word
# splitter; variable expansion is dealt with separately.
_PLAIN = frozenset(string.ascii_letters + string.digits + "_@%+=:,./-${}")


class _Expand(str):
    """A command argument whose `${VARIABLE}` systemd is meant to expand."""


def _check_text(value: str, what: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UserError(f"{what} {value!r}: control characters cannot go into a systemd unit")


def _quote(item: str) -> str:
    if item and all(c in _PLAIN for c in item):
        return item
    return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(item: str, what: str) -> str:
    """One item of a setting that expands specifiers but not variables."""
    _check_text(item, what)
    return _quote(item.replace("%", "%%"))


def _exec_line(argv: Sequence[str]) -> str:
    words = []
    for i, arg in enumerate(argv):
        _check_text(arg, "command argument")
        text = arg.replace("%", "%%")
        if i > 0 and not isinstance(arg, _Expand):
            text = text.replace("$", "$$")  # systemd expands no variables in the program path
        words.append(_quote(text))
    return " ".join(words)


# --- the unit -----------------------------------------------------------------------

def _under(path: Path, roots: Sequence[Path]) -> Path | None:
    for root in roots:
        if path == root or root in path.parents:
            return root
    return None


def render_unit(*, exe: Sequence[str], config: Path | None, user_mode: bool, data_dir: Path,
                db: str | None = None, writable: Sequence[Path] = ()) -> str:
    """The unit text for `<exe...> [--config FILE] collect [--db URL]`.

    exe: argv prefix that runs wanwitness, its first item an absolute path.
    config: the collector's config file (absolute), or None for none (system mode) /
        the user's default config (user mode).
    data_dir: the only directory the service may write; in system mode below /var/lib
        (it becomes StateDirectory=).
    db: passed as --db; None leaves the store to the config file.
    writable: user mode: further directories the service may write (a SQLite file
        outside data_dir).
    """
    if not exe or not os.path.isabs(exe[0]):
        raise UserError(f"service: the program must be an absolute path, got {list(exe)!r}")
    if any(c in "$\"'\\" for c in exe[0]):
        # systemd refuses quotes and backslashes in a program path, and expands no
        # variables there (so `$$` would stay doubled).
        raise UserError(f"{exe[0]}: systemd cannot run a program whose path holds '$', "
                        "quotes or backslashes; install wanwitness elsewhere")
    named = [(config, "config file"), (data_dir, "data dir"), *((w, "writable dir") for w in writable)]
    for path, what in named:
        if path is not None and not os.path.isabs(path):
            raise UserError(f"service: {what} {path} must be an absolute path")

    argv: list[str] = list(exe)
    unit: list[str] = [MARKER,
                       "# Rewrite it with `wanwitness service install --force`; keep local changes",
                       "# in a drop-in (`systemctl edit wanwitness`), which a rewrite keeps.",
                       "[Unit]",
                       f"Description=wanwitness collector: outage ledger of the internet line "
                       f"({'user' if user_mode else 'system'} service)"]
    identity: list[str] = []   # who runs it, what it gets
    sandbox: list[str] = []    # mode-specific sandboxing
    env: dict[str, str] = {}

    if not user_mode:
        try:
            state_name = Path(data_dir).relative_to(SYSTEM_STATE_ROOT).as_posix()
        except ValueError:
            raise UserError(f"service: the system service's data dir must be below "
                            f"{SYSTEM_STATE_ROOT}, got {data_dir}") from None
        if state_name in ("", ".") or ".." in Path(state_name).parts:
            raise UserError(f"service: bad data dir {data_dir} for the system service")
        for w in writable:
            if Path(w) != Path(data_dir) and Path(data_dir) not in Path(w).parents:
                raise UserError(f"service: the system service can write only below {data_dir}, "
                                f"not {w}")
        # network-online.target is a system unit; a user manager cannot order against it.
        unit += ["Wants=network-online.target", "After=network-online.target"]
        identity += [
            "# A UID of its own, allocated at each start: no account to create or remove.",
            f"# systemd creates {data_dir} for it and keeps it owned by that UID.",
            "DynamicUser=yes",
            f"StateDirectory={_value(state_name, 'data dir')}",
            "StateDirectoryMode=0700",
        ]
        if config is not None:
            if any(c.isspace() or c in "\"'\\%" for c in str(config)):
                raise UserError(f"config file {config}: the system service takes the config file "
                                "from a plain path (no spaces, quotes, backslashes or '%'); "
                                "copy it to e.g. /etc/wanwitness/config.toml")
            _check_text(str(config), "config file")
            identity += [
                "# systemd reads the config as root and hands the service a private copy.",
                f"LoadCredential={CONFIG_CREDENTIAL}:{config}",
            ]
            argv += ["--config", _Expand("${CREDENTIALS_DIRECTORY}/" + CONFIG_CREDENTIAL)]
        home = Path(data_dir)
        # platformdirs' defaults inside the state dir: its data dir is the state dir itself,
        # its config dir is empty (the config is --config or none).
        env = {"HOME": str(home),
               "XDG_DATA_HOME": str(home.parent),
               "XDG_STATE_HOME": str(home.parent),
               "XDG_CONFIG_HOME": str(home / ".config"),
               "XDG_CACHE_HOME": str(home / ".cache")}
        sandbox += [
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "PrivateMounts=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "ProtectClock=yes",
            "ProtectHostname=yes",
            "ProtectProc=invisible",
            "RemoveIPC=yes",
            "CapabilityBoundingSet=",
        ]
    else:
        dirs = [Path(data_dir)] + [Path(w) for w in writable if Path(w) != Path(data_dir)]
        sandbox += [
            "# A user manager can set up the mounts below only in a user namespace.",
            "PrivateUsers=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "ReadWritePaths=" + " ".join(_value(str(d), "data dir") for d in dirs),
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "PrivateMounts=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectHostname=yes",
        ]
        if config is not None:
            argv += ["--config", str(config)]

    argv.append("collect")
    if db:
        argv += ["--db", db]
    env["PYTHONUNBUFFERED"] = "1"

    service = [
        "Type=exec",
        *identity,
        f"ExecStart={_exec_line(argv)}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}s",
        "# Exit status 3: the store is corrupt; restarting cannot help (the log says what to do).",
        "RestartPreventExitStatus=3",
        "Environment=" + " ".join(_value(f"{k}={v}", "environment") for k, v in env.items()),
        f"SyslogIdentifier={SERVICE}",
        "UMask=0077",
        "# Sandbox: it writes to its data dir only.",
        "NoNewPrivileges=yes",
        *sandbox,
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM",
    ]
    install = ["WantedBy=default.target" if user_mode else "WantedBy=multi-user.target"]
    return "\n".join([*unit, "", "[Service]", *service, "", "[Install]", *install]) + "\n"


# --- checks ---------------------------------------------------------------------------

def _require_root(user_mode: bool, action: str, path: Path) -> None:
    if not user_mode and os.geteuid() != 0:
        raise UserError(f"service {action}: {path} is the system service, which needs root: "
                        f"run `sudo wanwitness service {action}`, or `wanwitness service {action} "
                        "--user` for a service of your own")


def _check_exe(exe: Sequence[str], user_mode: bool, *, this_package: bool) -> None:
    prog = exe[0] if exe else ""
    if not os.path.isabs(prog) or not os.path.isfile(prog) or not os.access(prog, os.X_OK):
        raise UserError(f"service install: {prog or '(nothing)'} is not an executable file "
                        "given by its absolute path")
    if user_mode:
        return
    looked_at = [Path(prog), Path(os.path.realpath(prog))]
    if this_package:
        looked_at.append(Path(os.path.realpath(__file__)).parent.parent)
    for path in looked_at:
        root = _under(path, HOME_DIRS)
        if root is not None:
            raise UserError(f"service install: {path} is below {root}, which the system service "
                            "cannot read (ProtectHome=yes, and its dynamic user may not): install "
                            "wanwitness outside home directories (e.g. a venv in /opt/wanwitness), "
                            "or use --user")


def _check_config(config: Path | None, user_mode: bool) -> Path | None:
    if config is None:
        return None
    path = Path(os.path.abspath(os.path.expanduser(config)))
    if not path.is_file():
        raise UserError(f"config file {path}: no such file")
    if user_mode and _under(path, PRIVATE_TMP_DIRS):
        raise UserError(f"config file {path}: the service has a private /tmp and would not see it; "
                        "keep the config elsewhere")
    cfg.load(path, env={})  # a broken file is reported now, not at the service's start
    return path


def _configured_db(path: Path | None) -> str:
    """The config file's [store] url ('' = none) as the service will see it (no environment)."""
    if path is None or not path.is_file():
        return ""
    return str(cfg.load(path, env={}).store.url or "")


def _sqlite_dir(url: str, source: str) -> Path | None:
    """The directory of a SQLite database URL (None for other databases)."""
    import sqlalchemy as sa
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        raise UserError(f"{source} {url!r}: not a database URL (try sqlite:////abs/path.db "
                        "or postgresql://user@host/dbname)") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise UserError(f"{source} {url!r}: unsupported database {backend!r} "
                        "(use sqlite:/// or postgresql://)")
    if backend != "sqlite":
        return None
    db = parsed.database or ""
    if db in ("", ":memory:") or db.startswith("file:"):
        raise UserError(f"{source} {url!r}: the service needs a SQLite file given by its path")
    if not os.path.isabs(db):
        raise UserError(f"{source} {url!r}: the SQLite path must be absolute "
                        "(sqlite:////abs/path.db, four slashes)")
    return Path(os.path.abspath(db)).parent


def _check_db_option(db: str) -> None:
    import sqlalchemy as sa
    _sqlite_dir(db, "database URL")
    if sa.engine.make_url(db).password:
        raise UserError("the database URL holds a password and unit files are world-readable: "
                        "put the URL in the config file's [store] url (and pass --config), "
                        "or use ~/.pgpass or peer authentication")


def _is_ours(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"{path}: cannot read it: {e.strerror}") from None
    return MARKER in (line.rstrip("\r") for line in text.splitlines())


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{UNIT_NAME}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"{path}: cannot write it: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        raise UserError(f"{path}: cannot write it: {e.strerror}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    try:  # the rename itself survives a power cut only once the directory is on disk
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _login_name() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return "$USER"


# --- install / uninstall ------------------------------------------------------------------

def install(*, user_mode: bool, config: Path | None = None, db: str | None = None,
            force: bool = False, unit_dir: Path | None = None, exe: Sequence[str] | None = None,
            data_dir: Path | None = None) -> Installed:
    """Write the unit (atomically, mode 0644); refuse to replace a unit we did not write
    unless `force`. Returns the path, the commands to run next and notes."""
    path = unit_path(user_mode, unit_dir)
    _require_root(user_mode, "install", path)
    argv = list(exe) if exe else default_exe()
    _check_exe(argv, user_mode, this_package=not exe)
    data_dir = Path(os.path.abspath(data_dir)) if data_dir else (
        user_data_dir() if user_mode else SYSTEM_DATA_DIR)
    notes: list[str] = []

    config_path = _check_config(config, user_mode)
    # The config the service will read: the one given, else (user mode) the user's default.
    read_config = config_path or (user_config_file() if user_mode else None)
    configured = _configured_db(read_config)  # a broken config fails now, not at start
    if db:
        _check_db_option(db)
        db_arg: str | None = db
        if configured and configured != db:
            notes.append(f"the database URL given overrides [store] url of {read_config} for the service")
    elif configured:
        db_arg = None
        notes.append(f"the service uses the store of {read_config}: [store] url")
    else:
        db_arg = f"sqlite:///{data_dir / DB_FILE}"
    store_url = db_arg or configured

    if user_mode and _under(data_dir, PRIVATE_TMP_DIRS):
        raise UserError(f"{data_dir}: the service has a private /tmp; its data dir must be "
                        "elsewhere")
    writable: list[Path] = []
    sqlite_dir = _sqlite_dir(store_url, "database URL" if db_arg else f"{read_config}: [store] url")
    if sqlite_dir is not None and sqlite_dir != data_dir and data_dir not in sqlite_dir.parents:
        if not user_mode:
            raise UserError(f"{store_url}: the system service can write only to {data_dir}; "
                            "put the SQLite file there, or use postgresql://")
        if _under(sqlite_dir, PRIVATE_TMP_DIRS):
            raise UserError(f"{store_url}: the service has a private /tmp; keep the database "
                            "elsewhere")
        writable.append(sqlite_dir)

    text = render_unit(exe=argv, config=config_path, user_mode=user_mode, data_dir=data_dir,
                       db=db_arg, writable=writable)

    existed = os.path.lexists(path)
    if existed and not force and not _is_ours(path):
        what = "a symlink (a masked unit?)" if path.is_symlink() else "a unit file"
        raise UserError(f"{path}: {what} not written by `wanwitness service install` is there; "
                        "move it away, or pass --force to replace it")
    if user_mode:
        for d in (data_dir, *writable):  # ReadWritePaths= needs them to exist at start
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as e:
                raise UserError(f"{d}: cannot create the service's data dir: {e.strerror}") from None
    _write_atomic(path, text)

    ctl = systemctl(user_mode)
    if existed:
        commands = [f"{ctl} daemon-reload", f"{ctl} enable {SERVICE}", f"{ctl} restart {SERVICE}"]
    else:
        commands = [f"{ctl} daemon-reload", f"{ctl} enable --now {SERVICE}"]
    if user_mode:
        commands.append(f"loginctl enable-linger {_login_name()}")
        notes.append("`loginctl enable-linger` starts your service manager at boot, so the "
                     "collector runs without you logged in")
        notes.append(f"the service writes only to {', '.join(map(str, [data_dir, *writable]))}")
    else:
        if config_path is not None:
            notes.append(f"systemd hands {config_path} to the service at each start (it may stay "
                         "readable by root only); restart the service after editing it")
        if db_arg:
            conf = f" --config {config_path}" if config_path else ""
            notes.append(f"once the service has started, register agents in its store: "
                         f"sudo wanwitness{conf} agent add NAME --db {db_arg}")
    notes.append(f"logs: journalctl{' --user' if user_mode else ''} -u {SERVICE}")
    unseen = sorted(k for k in os.environ if k.startswith("WANWITNESS_"))
    if unseen:
        notes.append(f"{', '.join(unseen)} set in this shell: the service does not see "
                     f"{'it' if len(unseen) == 1 else 'them'}")
    return Installed(path, commands, notes)


def uninstall(*, user_mode: bool, unit_dir: Path | None = None) -> Uninstalled:
    """Remove the unit we wrote (never a foreign one). Returns the commands that stop and
    disable the service and make systemd forget the unit."""
    path = unit_path(user_mode, unit_dir)
    _require_root(user_mode, "uninstall", path)
    if not os.path.lexists(path):
        raise UserError(f"{path}: no such unit file; nothing to uninstall")
    if not _is_ours(path):
        raise UserError(f"{path}: not written by `wanwitness service install`; leaving it alone")
    try:
        path.unlink()
    except OSError as e:
        raise UserError(f"{path}: cannot remove it: {e.strerror}") from None
    ctl = systemctl(user_mode)
    # systemctl (v252) then says "Failed to disable unit, unit wanwitness.service does not
    # exist" but still removes the enablement links, exits 0 and, with --now, stops it.
    return Uninstalled(path, [f"{ctl} disable --now {SERVICE}", f"{ctl} daemon-reload"],
                       ["the ledger database is left where it is",
                        f"`disable` may say {UNIT_NAME} does not exist (its file is gone): "
                        "it still stops and disables it"])
