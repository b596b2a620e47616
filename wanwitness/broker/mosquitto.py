"""Configuration for an external Mosquitto 2.x broker: password file, ACL and a conf.d snippet.

The rules match the embedded broker's (`policy.py`): the collector reads and writes
everything under the prefix; an agent (username = agent id) may publish only its `rec`,
`hb` and `status` topics and read only `<prefix>/<id>/ack`.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from wanwitness.broker.policy import AGENT_TOPICS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PACKET
from wanwitness.collector.protocol import valid_agent_id
from wanwitness.errors import UserError

DEFAULT_DIRECTORY = Path("/etc/mosquitto/wanwitness")
PASSWD, ACL, CONF = "passwd", "acl", "wanwitness.conf"
MAX_COLLECTORS = 64


def collector_usernames(name: str, collectors: int) -> list[str]:
    """The broker users of `collectors` collectors: NAME, NAME-2, .. NAME-N."""
    return [name] + [f"{name}-{k}" for k in range(2, collectors + 1)]


def mosquitto_files(
    agents: list[tuple[str, str]],
    collector: tuple[str, str],
    prefix: str = "wanwitness",
    *,
    directory: Path | str = DEFAULT_DIRECTORY,
    listen: tuple[str, int] = ("", 1883),
    tls_files: tuple[Path, Path, Path] | None = None,
    tls_listen: tuple[str, int] = ("", 8883),
    max_packet: int = DEFAULT_MAX_PACKET,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    collectors: int = 1,
) -> dict[str, str]:
    """Contents of "passwd", "acl" and "wanwitness.conf".

    `listen` (host, port) is the listener the snippet defines, with its limits; host ""
    means every interface. `tls_files` (CA, certificate, key: `wanwitness broker tls init`)
    adds a second listener, MQTT over TLS at `tls_listen`.

    agents: (agent_id, password_hash); collector: (username, password_hash); hashes in
    Mosquitto's format (see `passwords.hash_password`). `directory` is where passwd and acl
    will live: the snippet names them by absolute path.

    `collectors` > 1 (several collectors, `collect --shared`): users NAME-2 .. NAME-N
    besides NAME, with the collector's password and rights. The snippet binds a client
    id to its user (`use_username_as_clientid`), so two collectors logged in as one user
    would push each other off the broker; each needs a user of its own.
    """
    _check_prefix(prefix)
    host, port = listen
    if not 0 < port < 65536 or any(c.isspace() for c in host):
        raise UserError(f"cannot listen on {host or '*'}:{port}: not a usable address")
    host = "" if host in ("0.0.0.0", "*") else host
    collector_name, collector_hash = collector
    _check_username(collector_name, "collector username")
    _check_hash(collector_name, collector_hash)
    if not 1 <= collectors <= MAX_COLLECTORS:
        raise UserError(f"collectors: {collectors} is not 1..{MAX_COLLECTORS}")
    collector_users = collector_usernames(collector_name, collectors)
    seen = set(collector_users)
    for agent_id, password_hash in agents:
        _check_username(agent_id, "agent id")
        if not valid_agent_id(agent_id):
            raise UserError(f"agent id {agent_id!r} is not a valid agent id (1-32 of a-z 0-9 - _, "
                            "starting with a letter or digit: it is a topic level and a user name)")
        if agent_id in seen:
            raise UserError(f"{agent_id!r} is used twice (agent ids and the collector usernames must differ)")
        _check_hash(agent_id, password_hash)
        seen.add(agent_id)

    users = [(name, collector_hash) for name in collector_users]
    passwd = "".join(f"{name}:{hashed}\n" for name, hashed in [*users, *agents])

    acl = (
        "# wanwitness access rules for Mosquitto 2.x. Generated: regenerate rather than edit.\n"
        "#\n"
        "# Agents log in with their agent id as username (%u). Each may publish only its\n"
        f"# records, heartbeats and status ({prefix}/<its id>/rec, hb, status) and read only\n"
        "# its own ack topic: it can neither forge its acks nor see another agent's messages.\n"
        "# (Pattern lines apply to every user; %u is the user's own name.)\n"
        + "".join(f"pattern write {prefix}/%u/{topic}\n" for topic in AGENT_TOPICS)
        + f"pattern read {prefix}/%u/ack\n"
        "\n"
        + ("# The collector reads every agent's messages and publishes their acks.\n"
           if collectors == 1 else
           "# The collectors (one user each: a client id is bound to its user) read every\n"
           "# agent's messages and publish their acks.\n")
        + "".join(f"user {name}\ntopic readwrite {prefix}/#\n" for name in collector_users)
    )

    directory = Path(directory).absolute()
    conf = (
        "# wanwitness: copy into /etc/mosquitto/conf.d/ and restart Mosquitto.\n"
        "# Generated: regenerate rather than edit.\n"
        "allow_anonymous false\n"
        f"password_file {directory / PASSWD}\n"
        f"acl_file {directory / ACL}\n"
        "# Keep queued messages across Mosquitto restarts (the stock mosquitto.conf sets\n"
        "# persistence_location /var/lib/mosquitto/).\n"
        "persistence true\n"
        "# The collector may be down for a while (upgrade, reboot, database trouble): Mosquitto\n"
        "# must hold the agents' QoS 1 records for it meanwhile. With the default of 1000 per\n"
        "# client, the rest of a long outage's records would be dropped.\n"
        "max_queued_messages 100000\n"
        "# Unacknowledged QoS 1 messages in flight to each client (the collector acks after its\n"
        "# database commit, so a window larger than the default 20 keeps it busy).\n"
        "max_inflight_messages 100\n"
        "# The largest packet a client may send: the protocol's largest message (64 KiB) plus\n"
        "# its topic and headers. Larger ones disconnect the client before they fill memory.\n"
        f"max_packet_size {max_packet}\n"
        "# The agents' listener (Mosquitto 2.x listens on localhost only until one is defined).\n"
        f"# If another file already defines port {port}, remove it there or here.\n"
        f"listener {port}{' ' + host if host else ''}\n"
        "# Connections at most on this listener, whoever they are from.\n"
        f"max_connections {max_connections}\n"
        "# A client id is its username: nobody can log in with the collector's client id and\n"
        "# push the collector off the broker (or take over its queued messages).\n"
        "use_username_as_clientid true\n"
    )
    if tls_files is not None:
        conf += _tls_listener_conf(tls_listen, *tls_files, max_connections=max_connections)
    return {PASSWD: passwd, ACL: acl, CONF: conf}


def _tls_listener_conf(listen: tuple[str, int], ca: Path, cert: Path, key: Path, *,
                       max_connections: int) -> str:
    host, port = listen
    if not 0 < port < 65536 or any(c.isspace() for c in host):
        raise UserError(f"cannot listen on {host or '*'}:{port} (TLS): not a usable address")
    host = "" if host in ("0.0.0.0", "*") else host
    for path in (ca, cert, key):
        if any(c in str(path) for c in "\n\r"):
            raise UserError(f"{path!r}: a file name with a line break cannot go into mosquitto.conf")
    return (
        "# MQTT over TLS for the agents: the files of `wanwitness broker tls init`. Mosquitto\n"
        "# reads them as user mosquitto: the key must be readable by it.\n"
        f"listener {port}{' ' + host if host else ''}\n"
        f"max_connections {max_connections}\n"
        "use_username_as_clientid true\n"
        f"cafile {Path(ca).absolute()}\n"
        f"certfile {Path(cert).absolute()}\n"
        f"keyfile {Path(key).absolute()}\n"
        "# Agents prove who they are with their password, not with a client certificate.\n"
        "require_certificate false\n"
    )


def write_mosquitto_config(
    out_dir: Path,
    agents: list[tuple[str, str]],
    collector: tuple[str, str],
    prefix: str = "wanwitness",
    *,
    listen: tuple[str, int] = ("", 1883),
    tls_files: tuple[Path, Path, Path] | None = None,
    tls_listen: tuple[str, int] = ("", 8883),
    max_packet: int = DEFAULT_MAX_PACKET,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    collectors: int = 1,
) -> list[Path]:
    """Write passwd (mode 0600), acl and wanwitness.conf into out_dir; return their paths."""
    out_dir = Path(out_dir).absolute()
    files = mosquitto_files(agents, collector, prefix, directory=out_dir, listen=listen,
                            tls_files=tls_files, tls_listen=tls_listen, max_packet=max_packet,
                            max_connections=max_connections, collectors=collectors)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in files.items():
            path = out_dir / name
            _write(path, text, 0o600 if name == PASSWD else 0o644)
            written.append(path)
        _give_passwd_to_mosquitto(out_dir / PASSWD)
    except OSError as exc:
        raise UserError(f"cannot write the Mosquitto configuration in {out_dir}: {exc.strerror or exc}") from None
    return written


def _write(path: Path, text: str, mode: int) -> None:
    # Write beside and rename, so Mosquitto never reads half a file; the mode is set
    # before any secret is written.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by umask and ignored for old files
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _give_passwd_to_mosquitto(path: Path) -> None:
    # Mosquitto 2.x reads the password file after dropping root for user "mosquitto":
    # a root-owned 0600 file makes it refuse to start ("Unable to open pwfile").
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    os.chown(path, user.pw_uid, user.pw_gid)


def _check_prefix(prefix: str) -> None:
    if (not prefix or prefix.startswith("/") or prefix.endswith("/") or "//" in prefix
            or any(c in prefix for c in "+#%\0") or any(c.isspace() for c in prefix)):
        raise UserError(f"topic prefix {prefix!r} is not usable: no wildcards, %, spaces or "
                        f"leading/trailing '/'")


def _check_username(name: str, what: str) -> None:
    # ':' ends the username in the password file; whitespace would break ACL lines.
    if not name or ":" in name or any(c.isspace() or ord(c) < 32 for c in name):
        raise UserError(f"{what} {name!r} is not usable with Mosquitto: no ':', spaces or control characters")


def _check_hash(name: str, hashed: str) -> None:
    if not hashed.startswith(("$7$", "$6$")) or any(c in hashed for c in ":\n\r \t"):
        raise UserError(f"the password hash for {name!r} is not in Mosquitto's format")
