"""`python -m proxymage_dev.chaos [--fast] [--long]` (`make chaos`, `make chaos-fast`)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from proxymage_dev.chaos.run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m proxymage_dev.chaos", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="CI's subset (under ~6 minutes)")
    parser.add_argument("--long", action="store_true", help="also a 10-minute MIRC outage (full run only)")
    args = parser.parse_args()
    if args.fast and args.long:
        parser.error("--long belongs to the full run, not --fast")
    sys.exit(asyncio.run(run(args.fast, args.long)))


main()
