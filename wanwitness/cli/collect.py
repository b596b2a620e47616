"""`wanwitness collect`: the long-running collector (broker, ingest, ledger)."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from wanwitness import __version__
from wanwitness import config as cfg
from wanwitness.cli.common import COLLECTOR_USER, Ctx, checked, db_option, safe_url, setup_logging
from wanwitness.errors import UserError

if TYPE_CHECKING:
    from wanwitness.broker.embedded import TlsListener
    from wanwitness.collector.duty import Duty
    from wanwitness.collector.homeassistant import HomeAssistant


@click.command()
@db_option
@click.option("--broker", metavar="URL", help="External broker mqtt://HOST:PORT or mqtts://HOST:PORT "
              "(default: [broker] url, else the embedded broker).")
@click.option("--listen", metavar="HOST:PORT", help="Address of the embedded broker "
              "(default: [broker] listen, 0.0.0.0:1883).")
@click.option("--tls-listen", metavar="HOST:PORT|off", help="MQTT over TLS address of the embedded "
              "broker (default: [broker] tls_listen, 0.0.0.0:8883, served once `wanwitness broker "
              "tls init` has made its certificate).")
@click.option("--prefix", metavar="PREFIX", help="Topic prefix (default: wanwitness).")
@click.option("--web", "web_listen", metavar="HOST:PORT", help="Address of the web UI and API "
              "(default: [web] listen, 127.0.0.1:8765); other than loopback it needs "
              "`wanwitness web password`.")
@click.option("--no-web", is_flag=True, help="Serve no web UI.")
@click.option("--shared", "share_group", metavar="GROUP", help="One of several collectors on one "
              "PostgreSQL: take the agents' messages through the external broker's shared "
              "subscription $share/GROUP/... (default: [broker] share_group).")
@click.pass_obj
def collect(obj: Ctx, db: str | None, broker: str | None, listen: str | None,
            tls_listen: str | None, prefix: str | None, web_listen: str | None,
            no_web: bool, share_group: str | None) -> None:
    """Receive the agents' records and keep them in the ledger (runs until Ctrl-C)."""
    from wanwitness.collector.agents import check_agent_password, list_agents
    from wanwitness.collector.loop import Collector
    from wanwitness.collector.quarantine import Quota

    conf = obj.config
    # Every option is checked before anything process-wide (logging, signals) is set up.
    prefix = checked(cfg._prefix, prefix, "--prefix") if prefix else conf.broker.prefix
    broker_url = checked(cfg._broker_url, broker, "--broker") if broker else conf.broker.url
    listen_at = checked(cfg._host_port, listen, "--listen") if listen else conf.broker.listen
    tls_at = (checked(cfg._host_port_or_off, tls_listen, "--tls-listen") if tls_listen is not None
              else conf.broker.tls_listen)
    if no_web and web_listen:
        raise UserError("--web and --no-web: choose one")
    web_at = (None if no_web else checked(cfg._host_port, web_listen, "--web") if web_listen
              else conf.web.listen)
    if web_at is not None and bool(conf.web.tls_cert) != bool(conf.web.tls_key):
        raise UserError("[web] tls_cert and tls_key: set both to serve the web UI over HTTPS, "
                        "or neither")
    if share_group is not None:
        share_group, shared_with = checked(cfg._share_group, share_group, "--shared"), "--shared"
        if not share_group:
            raise UserError("--shared: give the group's name, e.g. --shared collectors")
    else:
        share_group, shared_with = conf.broker.share_group, "[broker] share_group"
    if share_group and not broker_url:
        raise UserError(f"{shared_with}: several collectors need an external broker with shared "
                        "subscriptions (--broker mqtt://HOST:PORT, e.g. Mosquitto 2); the "
                        "embedded broker serves one collector")
    if share_group and not (db or conf.store.url).startswith("postgresql"):
        raise UserError(f"{shared_with}: several collectors need one PostgreSQL database "
                        "(--db postgresql://..., [store] url), not a SQLite file")
    setup_logging(conf.collector.log_level)
    store = obj.store(db)
    web_sock = _web_socket(store, web_at)
    embedded = None
    username, password = conf.broker.username, conf.broker.password
    if not broker_url:
        from wanwitness.broker.embedded import BrokerPortInUse, EmbeddedBroker, Limits, TlsListenError
        host, port = listen_at
        tls = _tls_listener(conf, tls_at, explicit=tls_listen is not None)
        secret = secrets.token_urlsafe(24)

        def authenticate(user: str, pw: str) -> str | None:
            if user == COLLECTOR_USER:
                return "collector" if secrets.compare_digest(pw, secret) else None
            return "agent" if check_agent_password(store, user, pw) else None

        limits = Limits(max_packet=conf.broker.max_packet, max_connections=conf.broker.max_connections)
        embedded = EmbeddedBroker(host, port, authenticate, prefix=prefix, tls=tls, limits=limits)
        try:
            embedded.start()
        except BrokerPortInUse as e:
            raise UserError(f"{e}: choose a free port with --listen {e.free_alternative} "
                            f"(config: [broker] listen), or use that broker with --broker "
                            f"{e.connect_url}") from None
        except TlsListenError as e:
            raise UserError(f"{e} (--tls-listen, config: [broker] tls_listen)") from None
        except UserError as e:
            raise UserError(f"{e} (--listen, config: [broker] listen)") from None
        broker_url = f"mqtt://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
        username, password = COLLECTOR_USER, secret
    else:
        # `broker mosquitto-config` keeps the collector's user and password in the store;
        # a collector of several (--collectors N) names its own user (NAME-K, e.g. by
        # WANWITNESS_BROKER_USERNAME) and shares that password.
        if not username:
            username = store.setting("broker.collector_username") or ""
        if not password:
            password = store.setting("broker.collector_password") or ""

    collector = Collector(store, broker_url, prefix=prefix, username=username, password=password,
                          client_id=conf.broker.client_id,
                          ca_file=conf.broker.ca_file,
                          share_group=share_group,
                          batch_max=conf.collector.batch_max,
                          summary_s=conf.collector.summary_s,
                          quota=Quota(conf.collector.quarantine_max_rows,
                                      conf.collector.quarantine_max_bytes))

    home_assistant: HomeAssistant | Duty | None = None
    ha = conf.homeassistant
    if ha.enabled and ha.broker:
        from wanwitness.collector.homeassistant import HomeAssistant, web_url

        def publisher() -> HomeAssistant:
            return HomeAssistant(store, conf, prefix=prefix, status=lambda: dict(collector.status),
                                 support_url=web_url(web_sock.getsockname()[:2] if web_sock
                                                     else None, bool(conf.web.tls_cert)))
        if share_group:
            # One publisher for all the collectors sharing the store (collector/duty.py).
            from wanwitness.collector.duty import Duty
            home_assistant = Duty(store, "Home Assistant publisher", publisher)
        else:
            home_assistant = publisher()

    from wanwitness.collector import notify as nt
    notifier = None
    if nt.configured(conf):  # every URL was checked by Apprise when the config was read
        notifier = nt.Notifier(store, conf, status=lambda: dict(collector.status))
    from wanwitness.collector.ledger import Checkpointer
    from wanwitness.collector.stamp import DailyStamper
    stamper = DailyStamper.from_config(store, conf)
    every = conf.collector.checkpoint_s
    periodic: list[tuple[Callable[[], None], Callable[[], None]]]  # (start, stop)
    if share_group:
        # One checkpointer and one stamper for all the collectors sharing the store
        # (several would each make a checkpoint and ask the TSAs for a stamp of it).
        from wanwitness.collector.duty import Duty, Periodic
        duties = [Duty(store, "ledger checkpoints", lambda: Periodic(Checkpointer(store, every)))]
        if stamper is not None:
            duties.append(Duty(store, "trusted timestamps",
                               lambda: Periodic(DailyStamper.from_config(store, conf))))
        periodic = [(d.start, d.close) for d in duties]
    else:
        jobs = [j for j in (stamper, Checkpointer(store, every)) if j is not None]
        periodic = [(j.start, j.stop) for j in jobs]
    hooks = [h.changed for h in (home_assistant, notifier) if h is not None]
    if hooks:
        def on_commit() -> None:
            for hook in hooks:
                hook()
        collector.on_commit = on_commit

    web_server = None
    if web_sock is not None:
        from zoneinfo import ZoneInfo

        from wanwitness.web.app import WebSettings, create_app, is_loopback
        from wanwitness.web.server import WebServer
        web_host = web_sock.getsockname()[0]
        app = create_app(store, WebSettings(tz=ZoneInfo(conf.tariff.timezone),
                                            loopback_only=is_loopback(web_host),
                                            tls=bool(conf.web.tls_cert), config=conf,
                                            status=lambda: dict(collector.status),
                                            ingest=collector.ingestor.metrics))
        web_server = WebServer(app, web_sock, certfile=conf.web.tls_cert, keyfile=conf.web.tls_key)
        web_server.start()

    def on_signal(_sig, _frame):
        collector.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    n_agents = len(list_agents(store))
    if embedded:
        where = "embedded broker listening on " + ", ".join(
            f"{scheme}://{address}" for scheme, address in embedded.listening)
    elif share_group:
        where = f"broker {broker_url}, shared group {share_group!r} as {collector.client_id}"
    else:
        where = f"broker {broker_url}"
    click.echo(f"wanwitness collector {__version__}: store {safe_url(store.url)}, {where}, "
               f"prefix {prefix!r}, {n_agents} agent(s) registered. Ctrl-C stops.", err=True)
    if embedded:
        for warning in plain_mqtt_warnings(embedded.listening, tls=embedded.tls is not None):
            click.echo(warning, err=True)
    if web_server is not None:
        click.echo(f"web UI on {web_server.url}", err=True)
    if home_assistant is not None:
        click.echo(f"Home Assistant: MQTT discovery on {safe_url(ha.broker)} under "
                   f"{ha.discovery_prefix}/" + (", by one of the collectors sharing the store"
                                                if share_group else ""), err=True)
    if notifier is not None:
        click.echo("notifications to " + ", ".join(nt.display(u) for u in nt.all_urls(conf)), err=True)
    if stamper is not None:
        click.echo(f"trusted timestamps of ledger checkpoints every {conf.stamp.interval_s} s from "
                   + ", ".join(conf.stamp.tsa_urls), err=True)
    if n_agents == 0:
        click.echo("No agents yet: add one with `wanwitness agent add NAME`.", err=True)
    try:
        if home_assistant is not None:
            home_assistant.start()
        if notifier is not None:
            notifier.start()
        for start, _stop in periodic:
            start()
        collector.connect()
        if not collector.wait_connected():
            logging.getLogger("wanwitness.collector").warning(
                "no connection to %s yet; still trying", broker_url)
        collector.run()
    finally:
        if web_server is not None:
            web_server.stop()
        if home_assistant is not None:
            home_assistant.close()
        if notifier is not None:
            notifier.close()
        for _start, stop in periodic:
            stop()
        collector.close()
        if embedded:
            embedded.stop()
        click.echo(f"stopped: {collector.stored} record(s) stored, "
                   f"{collector.quarantined} quarantined this run.", err=True)


def _web_socket(store, web_at: tuple[str, int] | None):
    """The web UI's listening socket, bound now so a busy port stops the start; None
    when the web UI is off. Off loopback without a password is refused."""
    if web_at is None:
        return None
    from wanwitness.web import auth
    from wanwitness.web.app import is_loopback
    from wanwitness.web.server import bind
    host, port = web_at
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if not is_loopback(host) and not auth.has_password(store):
        raise UserError(f"refusing to serve the web UI on {where} without a password: anyone "
                        f"on that network could read and change your records. Set one with "
                        f"`wanwitness web password`, or serve it on loopback (--web "
                        f"127.0.0.1:{port}, [web] listen), or turn it off with --no-web")
    return bind(host, port)


def _tls_listener(conf: cfg.Config, tls_at: tuple[str, int] | None, *, explicit: bool) -> TlsListener | None:
    """The embedded broker's TLS listener: where, and the certificate `broker tls init` made
    (or [broker] tls_cert/tls_key name); None when it is "off" or there is no certificate."""
    from wanwitness.broker.embedded import TlsListener
    from wanwitness.broker.tls import configured_server
    if tls_at is None:
        return None
    server = configured_server(conf.broker, conf.path)
    if server is None:
        if explicit:
            raise UserError("--tls-listen: the broker has no certificate yet: run `wanwitness "
                            "broker tls init` (or set [broker] tls_cert and tls_key)")
        return None
    return TlsListener(tls_at[0], tls_at[1], *server)


def plain_mqtt_warnings(listening: list[tuple[str, str]], *, tls: bool) -> list[str]:
    """A warning for every plain MQTT socket another machine can reach."""
    advice = ("once every agent uses TLS, set [broker] listen = \"127.0.0.1:1883\"" if tls
              else "use TLS: wanwitness broker tls init")
    warnings = []
    for scheme, address in listening:
        host = address.rpartition(":")[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if scheme != "mqtt" or ip.is_loopback:
            continue
        where = f"{address} (every interface)" if ip.is_unspecified else address
        warnings.append(f"WARNING: plain MQTT on {where}: agents' passwords and records cross the "
                        f"network in clear; {advice}")
    return warnings
