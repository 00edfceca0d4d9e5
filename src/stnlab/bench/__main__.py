"""``python -m stnlab.bench <data> [options]``: run a benchmark, print a table and a JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from stnlab.bench import data as data_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stnlab.bench", description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    data_bench.add_arguments(sub.add_parser("data", help=data_bench.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = data_bench.run(args)
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
