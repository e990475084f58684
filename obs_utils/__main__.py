"""Command line: python -m obs_utils ls|cp|rm|cat URL ... (the same URLs as the Python API)."""
import argparse
import logging
import sys

from . import CHATTY_LOGGERS, api
from .errors import ObsError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m obs_utils",
                                     description="Copy, list and remove files on OBS / S3 / local.")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list a folder")
    ls.add_argument("url")
    ls.add_argument("-r", "--recursive", action="store_true")
    cp = sub.add_parser("cp", help="copy a file, or a folder with -r (incremental)")
    cp.add_argument("src")
    cp.add_argument("dst")
    cp.add_argument("-r", "--recursive", action="store_true")
    cp.add_argument("--threads", type=int, default=None)
    rm = sub.add_parser("rm", help="remove a file, or a folder with -r")
    rm.add_argument("url")
    rm.add_argument("-r", "--recursive", action="store_true")
    cat = sub.add_parser("cat", help="print a file")
    cat.add_argument("url")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)

    try:
        if args.command == "ls":
            for name in api.listdir(args.url, recursive=args.recursive):
                print(name)
        elif args.command == "cp" and args.recursive:
            api.copy_tree(args.src, args.dst, threads=args.threads)
        elif args.command == "cp":
            api.copy(args.src, args.dst)
        elif args.command == "rm":
            api.remove(args.url, recursive=args.recursive)
        else:
            sys.stdout.buffer.write(api.read_bytes(args.url))
    except (ObsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
