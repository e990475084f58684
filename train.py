"""The ModelArts training job.

    python train.py --data_url=obs://bucket/garbage/train_data/ --train_url=obs://bucket/out/

`data_url` and `train_url` may be obs://, s3:// or local paths; with no --data_url the job runs
on the built-in demo data. Flags the platform adds are logged and ignored. This file only
orchestrates: each stage lives in its own package (inputs/, models/, training/, ...).

Stages built so far: fetch the data (OBS sync or the demo set) and write the resolved run
configuration. Training, evaluation and export come with the next issues; until then the job
says so at the end and trains nothing.
"""
import argparse
import importlib.metadata
import json
import logging
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)  # ModelArts runs the boot file from another working directory

import obs_utils  # noqa: E402
from inputs import fetch  # noqa: E402

log = logging.getLogger("train")


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train an image classifier the way ModelArts runs it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_url", default="",
                        help="training images: obs://, s3:// or a local folder; empty = demo data")
    parser.add_argument("--train_url", default=os.path.join("outputs", "demo"),
                        help="where the outputs go: obs://, s3:// or a local folder")
    parser.add_argument("--local_data_root", default="",
                        help="local cache for remote data (default: /cache if writable, "
                             "else ~/.cache/modelarts-classifier)")
    parser.add_argument("--obs_threads", type=int, default=16,
                        help="parallel transfers when syncing with OBS")
    return parser


def setup_logging():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for chatty in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def versions():
    """Installed versions of what the run depends on (read from metadata: no heavy imports)."""
    found = {"python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "boto3"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(argv=None):
    setup_logging()
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log.warning("ignoring flags this job does not know (the platform adds some): %s",
                    " ".join(unknown))
    started = time.time()
    try:
        cache_root = fetch.resolve_cache_root(args.local_data_root)
        data_dir = fetch.fetch_data(args.data_url, cache_root, threads=args.obs_threads)
        run_config = {"flags": vars(args), "ignored_flags": unknown, "versions": versions(),
                      "local_data_dir": data_dir}
        config_url = obs_utils.join(args.train_url, "run_config.json")
        obs_utils.write_text(config_url, json.dumps(run_config, indent=2, ensure_ascii=False))
        log.info("wrote the resolved configuration to %s", config_url)
    except obs_utils.ObsError as exc:
        log.error("%s", exc)
        return 2
    log.warning("training, evaluation and export are not built yet: this run fetched the data "
                "(%s) and wrote its configuration, and trained nothing (%.1f s)",
                data_dir, time.time() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
