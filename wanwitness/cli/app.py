"""The `wanwitness` command: the root group, and every command group added to it.

Each command module (collect, demo, ledger, agents, broker, settings, boards, flash,
claims, service, notify, stamp) is a thin wrapper over the library and imports only `common`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from wanwitness import __version__
from wanwitness.cli import (
    agents,
    boards,
    broker,
    callsheet,
    claims,
    collect,
    demo,
    flash,
    ledger,
    notify,
    service,
    settings,
    stamp,
    web,
)
from wanwitness.cli.common import Ctx
from wanwitness.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Collector config file (default: `wanwitness config path`).")
@click.version_option(__version__, prog_name="wanwitness")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """wanwitness: an independent witness for your internet line.

    An ESP32 agent watches the router and probes the internet; this collector keeps
    a tamper-evident ledger of every outage and turns it into a refund claim.
    """
    ctx.obj = Ctx(config_path)


for command in (collect.collect, demo.demo, ledger.verify, ledger.ledger, ledger.outages, ledger.quarantine,
                agents.agent, broker.broker, settings.config_group):
    cli.add_command(command)
flash.register(cli)
boards.register(cli)
claims.register(cli)
service.register(cli)
web.register(cli)
callsheet.register(cli)
notify.register(cli)
stamp.register(cli)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="wanwitness", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except UserError as e:
        click.echo(f"wanwitness: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug: one line, the details only when asked for
        if os.environ.get("WANWITNESS_DEBUG"):
            raise
        click.echo(f"wanwitness: internal error: {type(e).__name__}: {e} "
                   "(run with WANWITNESS_DEBUG=1 for details)", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
