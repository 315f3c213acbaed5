"""Command line: ``python -m torch_geometry plot runs/<name>/history.json [--out FILE]``."""
import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_geometry",
                                     description="torch_geometry command line tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plot", help="redraw the geometry plots of a history.json")
    p.add_argument("history", help="history.json written by GeometryTracker.to_json")
    p.add_argument("--out", help="PNG to write (default: geometry.png beside the history)")
    p.add_argument("--metrics", nargs="*", help="metrics to draw (default: all)")
    args = parser.parse_args(argv)

    if args.command == "plot":
        from .plotting import plot_history
        from .tracking import load_history

        if not os.path.isfile(args.history):
            print(f"error: {args.history} does not exist", file=sys.stderr)
            return 2
        try:
            history = load_history(args.history)
        except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
            print(f"error: {args.history} is not a history JSON file written by "
                  f"GeometryTracker.to_json ({e})", file=sys.stderr)
            return 2
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.history)), "geometry.png")
        try:
            plot_history(history, out, metrics=args.metrics)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
