"""`wanwitness demo`: collector, agent on the virtual board and a scripted outage."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--dir", "workdir", default="demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the demo keeps its files.")
@click.option("--outage", "outage_s", default=20.0, show_default=True,
              type=click.FloatRange(5, 600), help="Length of the scripted outage in seconds.")
@click.option("--once", is_flag=True, help="Exit after the scripted outage.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--port", "broker_port", type=click.IntRange(1, 65535),
              help="Port of the embedded broker (default: a free one).")
def demo(workdir: Path, outage_s: float, once: bool, as_json: bool, broker_port: int | None) -> None:
    """Collector + the real agent on the virtual board + a scripted outage, all on loopback."""
    from wanwitness.demo import run_demo
    sys.exit(run_demo(workdir, outage_s=outage_s, once=once, as_json=as_json,
                      broker_port=broker_port))
