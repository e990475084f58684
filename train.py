"""The ModelArts training job.

    python train.py --data_url=obs://bucket/garbage/train_data/ --train_url=obs://bucket/out/

`data_url` and `train_url` may be obs://, s3:// or local paths; with no --data_url the job runs
on the built-in demo data. Flags the platform adds are logged and ignored. This file only
orchestrates: each stage lives in its own package (inputs/, models/, training/, ...).

Stages built so far: fetch the data (OBS sync or the demo set), screen and split it, write the
resolved run configuration, and build the balanced, augmented input pipeline (one batch is drawn
to prove it). Training, evaluation and export come with the next issues; until then the job says
so at the end and trains nothing.
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter, not our log

import obs_utils  # noqa: E402
from inputs import augment, balance, fetch, layouts, pipeline, prepare, screening  # noqa: E402

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

    data = parser.add_argument_group("data")
    data.add_argument("--data_format", default="auto",
                      choices=["auto", "garbage", "folders", "manifest"],
                      help="layout of data_url (auto: detected)")
    data.add_argument("--manifest", default="",
                      help="manifest file (CSV or JSON lines), relative to data_url")
    data.add_argument("--val_data_url", default="",
                      help="explicit validation set (any layout); default: split from data_url")
    data.add_argument("--val_ratio", type=float, default=0.2)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--max_image_pixels", type=int, default=screening.MAX_PIXELS,
                      help="larger images are set aside (decompression bombs)")
    data.add_argument("--min_image_side", type=int, default=screening.MIN_SIDE,
                      help="images with a shorter side are set aside")

    feed = parser.add_argument_group("input pipeline")
    feed.add_argument("--input_size", type=int, default=224)
    feed.add_argument("--resize_mode", default="letterbox", choices=["letterbox", "stretch"],
                      help="letterbox keeps the aspect ratio and pads")
    feed.add_argument("--batch_size", type=int, default=32)
    feed.add_argument("--balance", default="oversample", choices=list(balance.POLICIES))
    feed.add_argument("--augment", default="standard", choices=list(augment.PRESETS))
    feed.add_argument("--cache_images", type=_bool, default=False,
                      help="keep decoded, resized images in memory")
    feed.add_argument("--deterministic", type=_bool, default=False,
                      help="same batches for the same --seed (slower)")
    for name, kind in (("flip", str), ("rotation", float), ("zoom", float), ("shift", float),
                       ("brightness", float), ("contrast", float), ("saturation", float),
                       ("hue", float), ("cutmix_prob", float), ("cutmix_alpha", float),
                       ("mixup_prob", float), ("mixup_alpha", float)):
        feed.add_argument(f"--{name}", type=kind, default=None,
                          help=f"override the --augment preset's {name}")
    return parser


def _bool(text):
    """ModelArts passes every hyperparameter as text: accept true/false, 1/0, yes/no."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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
        settings = augment.resolve(args.augment, {
            name: getattr(args, name) for name in augment.DEFAULTS})
        cache_root = fetch.resolve_cache_root(args.local_data_root)
        data_dir = fetch.fetch_data(args.data_url, cache_root, threads=args.obs_threads)
        val_dir = (fetch.fetch_data(args.val_data_url, cache_root, threads=args.obs_threads)
                   if args.val_data_url else None)
        data = prepare.prepare(data_dir, args.train_url, cache_root, args.data_format,
                               args.manifest or None, val_dir, args.val_ratio, args.seed,
                               args.max_image_pixels, args.min_image_side)
        counts = screening.class_counts(data.train, len(data.class_names))
        balance.log_plan(counts, args.balance, data.class_names, len(data.train))
        run_config = {"flags": vars(args), "ignored_flags": unknown, "versions": versions(),
                      "local_data_dir": data_dir, "augmentation": settings,
                      "classes": len(data.class_names), "train_images": len(data.train),
                      "val_images": len(data.val)}
        config_url = obs_utils.join(args.train_url, "run_config.json")
        obs_utils.write_text(config_url, json.dumps(run_config, indent=2, ensure_ascii=False))
        log.info("wrote the resolved configuration to %s", config_url)
        train_ds = pipeline.train_dataset(
            data.train, len(data.class_names), args.batch_size, args.input_size,
            args.resize_mode, args.balance, settings, args.seed, args.cache_images,
            args.deterministic)
        images, labels = next(iter(train_ds))
        log.info("input pipeline ready: batches of %s images, %s labels",
                 tuple(images.shape), tuple(labels.shape))
    except (obs_utils.ObsError, layouts.LayoutError, screening.DataError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    log.warning("training, evaluation and export are not built yet: this run prepared the "
                "data and the input pipeline, and trained nothing (%.1f s)",
                time.time() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
