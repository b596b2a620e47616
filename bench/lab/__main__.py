"""`python -m bench.lab`: the outage lab's command line (as root).

    python -m bench.lab run SCENARIO.json [--json OUT] [--keep] [--workdir DIR] [--seed N]
    python -m bench.lab suite DIR [--json OUT] [--markdown OUT] [--seed N]
    python -m bench.lab check FILE_OR_DIR ...

`run` plays one scenario and prints its result (JSON on stdout, or to --json OUT);
`suite` runs every scenario in DIR, each in a fresh lab, and prints the table;
`check` only validates scenario files. `--seed N` fixes the run's random choices (the
probe phase the timeline starts at, the packets `loss` drops); without it a run picks
a random seed. Every run logs its seed and stores it in its result (`seed`); a suite
gives all its scenarios the same seed, so `run FILE --seed N` repeats one of them.
Exit status: 0 when the lab ran (whatever the
score), 2 for a bad scenario file or argument, 1 when the lab itself could not run,
130 when interrupted. Namespaces, nftables rules and processes are removed in every
case (see bench/lab/topology.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from wanwitness.errors import UserError

from . import scenario as scn
from . import score
from .runner import DRAIN_TIMEOUT_S, SETTLE_S, Terminated, describe, log, run_scenario
from .topology import LabError, cleanup_stale, new_seed


def _write(path: Path | None, data) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if path is None:
        sys.stdout.write(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def cmd_run(args) -> int:
    sc = scn.load(args.scenario)
    res = run_scenario(sc, workdir=args.workdir, keep=args.keep, settle_s=args.settle,
                       drain_timeout_s=args.drain_timeout, seed=args.seed)
    print(describe(res), file=sys.stderr)
    _write(args.json_out, res)
    return 0


def cmd_suite(args) -> int:
    scenarios = scn.load_dir(args.directory)  # all validated before anything starts
    if args.only:
        wanted = set(args.only.split(","))
        scenarios = [s for s in scenarios if s.name in wanted]
        if not scenarios:
            raise UserError(f"--only {args.only}: no such scenario in {args.directory}")
    total = sum(s.duration_s for s in scenarios)
    seed = new_seed() if args.seed is None else args.seed
    log(f"suite: {len(scenarios)} scenario(s), {total / 60:.0f} min of timelines "
        f"(plus set-up and delivery), seed {seed}")
    results, failed = [], []
    started = time.monotonic()
    for sc in scenarios:
        try:
            res = run_scenario(sc, keep=args.keep, settle_s=args.settle,
                               drain_timeout_s=args.drain_timeout, seed=seed)
        except LabError as e:
            log(f"suite: {sc.name}: the lab could not run: {e}")
            failed.append({"scenario": sc.name, "seed": seed, "error": str(e)})
            continue
        print(describe(res), file=sys.stderr)
        results.append(res)
        if args.json_out:  # partial results survive an interrupted suite
            _write(args.json_out, {"seed": seed, "results": results, "failed": failed,
                                   "summary": score.summarize(results)})
    summary = score.summarize(results)
    text = score.table(summary)
    print(text)
    log(f"suite: done in {(time.monotonic() - started) / 60:.1f} min (seed {seed})")
    if args.json_out:
        _write(args.json_out, {"seed": seed, "results": results, "failed": failed,
                               "summary": summary})
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return 1 if failed else 0


def cmd_check(args) -> int:
    for p in args.paths:
        p = Path(p)
        found = scn.load_dir(p) if p.is_dir() else [scn.load(p)]
        for sc in found:
            print(f"{sc.path}: ok ({sc.name}, {sc.duration_s:g} s, {len(sc.timeline)} entries, "
                  f"truth {[(s.cls, s.start_ms / 1000, s.end_ms / 1000) for s in scn.truth(sc, sc.planned_times_ms())]})")
    return 0


def seed_arg(text: str) -> int:
    """--seed: a whole number 0..2**63-1 (argparse turns the ValueError into exit 2)."""
    if not text.strip().isdigit() or int(text) >= 1 << 63:
        raise ValueError(text)
    return int(text)


seed_arg.__name__ = "seed (a whole number >= 0)"  # argparse's error names the type


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lab",
                                 description="The outage lab: scripted outages in network "
                                             "namespaces, scored against the truth.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--json", dest="json_out", type=Path, help="write the result here")
        p.add_argument("--keep", action="store_true", help="keep the work directory (logs, store)")
        p.add_argument("--settle", type=float, default=SETTLE_S,
                       help=f"seconds between the agent coming online and the timeline's start "
                            f"(default {SETTLE_S:g})")
        p.add_argument("--drain-timeout", type=float, default=DRAIN_TIMEOUT_S,
                       help=f"seconds to wait for the agent to deliver after the timeline "
                            f"(default {DRAIN_TIMEOUT_S:g})")
        p.add_argument("--seed", type=seed_arg, metavar="N",
                       help="seed for the lab's random choices (probe phase, which packets "
                            "loss drops); default: a random one, printed")

    p = sub.add_parser("run", help="run one scenario")
    p.add_argument("scenario", type=Path)
    p.add_argument("--workdir", type=Path, help="work directory (default: a new temp dir)")
    common(p)
    p = sub.add_parser("suite", help="run every scenario in a directory")
    p.add_argument("directory", type=Path)
    p.add_argument("--markdown", type=Path, help="write the table here too")
    p.add_argument("--only", help="comma-separated scenario names")
    common(p)
    p = sub.add_parser("check", help="validate scenario files only")
    p.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)

    def on_term(signum, frame):
        raise Terminated()

    # The Lab closes itself on SIGTERM first, then calls this: the run unwinds like on
    # Ctrl-C (its temp directory removed) and we exit 143.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_term)
    try:
        if args.cmd in ("run", "suite") and os.geteuid() == 0:
            # What a killed run (SIGKILL: no chance to clean up) left behind goes first
            removed = cleanup_stale()
            if removed:
                log(f"removed {len(removed)} namespace(s) of lab runs that were killed: "
                    f"{', '.join(removed)}")
        return {"run": cmd_run, "suite": cmd_suite, "check": cmd_check}[args.cmd](args)
    except LabError as e:
        print(str(e), file=sys.stderr)
        return 1
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("lab: terminated; cleaned up", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("lab: interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
