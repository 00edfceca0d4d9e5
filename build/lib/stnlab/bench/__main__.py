"""``python -m stnlab.bench data|train|eval [options]``: print a table, then one JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from stnlab.bench import data as data_bench
from stnlab.bench import eval as eval_bench
from stnlab.bench import train as train_bench
from stnlab.errors import user_error_message


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark; a problem the user can fix exits with 1 and one line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m stnlab.bench", description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    benches = {"data": data_bench, "train": train_bench, "eval": eval_bench}
    for name, bench in benches.items():
        bench.add_arguments(sub.add_parser(name, help=bench.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        results = benches[args.which].run(args)
    except Exception as err:  # a user's problem is one line, as in every other command
        message = user_error_message(err)
        if message is None:
            raise
        parser.exit(1, f"{parser.prog} {args.which}: error: {message}\n")
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
