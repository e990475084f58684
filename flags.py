"""train.py's flags: the table (every option a flag, with its default), the demo's settings
for what the user leaves unset, and the parse. train.py orchestrates; this is what it reads."""
import argparse
import os
import sys

from cli import boolean, positive
from inputs import augment, balance, screening
from models import backbones, heads
from training import distribute, optim

# What the demo (no --data_url) runs with, for every flag the user leaves unset: small enough
# to finish in minutes on a 2-core machine.
DEMO = {"backbone": "mobilenetv3small", "input_size": 32, "batch_size": 32, "max_epochs": 8,
        "learning_rate": 2e-3, "freeze_epochs": 0, "flip": "none", "augment": "light",
        "train_url": os.path.join("outputs", "demo")}


def _mode_default_train_url(args, given):
    """Training writes to outputs/run (demo: outputs/demo); eval and predict to outputs/<mode>,
    so they never mix their reports into a training run's by default."""
    if "train_url" not in given and args.mode != "train":
        args.train_url = os.path.join("outputs", args.mode)


def build_parser():
    # No abbreviations: the platform adds flags of its own, and `--batch=64` must not silently
    # become something else; an unknown flag is reported instead.
    parser = argparse.ArgumentParser(
        description="Train an image classifier the way ModelArts runs it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add = parser.add_argument
    add("--data_url", default="", help="training images: obs://, s3:// or a local folder; "
                                       "empty = the built-in demo data")
    add("--train_url", default=os.path.join("outputs", "run"),
        help="where the outputs go: obs://, s3:// or a local folder (demo: outputs/demo)")
    add("--local_data_root", default="", help="local cache (default: /cache if writable, "
                                              "else ~/.cache/modelarts-classifier)")
    add("--obs_threads", type=positive, default=16, help="parallel transfers when syncing with OBS")

    data = parser.add_argument_group("data")
    data.add_argument("--data_format", default="auto",
                      choices=["auto", "garbage", "folders", "manifest"])
    data.add_argument("--manifest", default="", help="manifest file, relative to data_url")
    data.add_argument("--val_data_url", default="",
                      help="explicit validation set (any layout); default: split from data_url")
    data.add_argument("--drop_val_copies", type=boolean, default=True,
                      help="with --val_data_url: leave out of training the images that are "
                           "exact copies of validation images")
    data.add_argument("--val_ratio", type=float, default=0.2)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--max_image_pixels", type=int, default=screening.MAX_PIXELS)
    data.add_argument("--min_image_side", type=int, default=screening.MIN_SIDE)

    feed = parser.add_argument_group("input pipeline")
    feed.add_argument("--input_size", type=positive, default=224)
    feed.add_argument("--resize_mode", default="letterbox", choices=["letterbox", "stretch"])
    feed.add_argument("--batch_size", type=positive, default=32, help="per GPU (replica)")
    feed.add_argument("--balance", default="oversample", choices=list(balance.POLICIES))
    feed.add_argument("--augment", default="standard", choices=list(augment.PRESETS))
    feed.add_argument("--cache_images", type=boolean, default=False)
    feed.add_argument("--deterministic", type=boolean, default=False)
    for name, kind in (("flip", str), ("rotation", float), ("zoom", float), ("shift", float),
                       ("brightness", float), ("contrast", float), ("saturation", float),
                       ("hue", float), ("cutmix_prob", float), ("cutmix_alpha", float),
                       ("mixup_prob", float), ("mixup_alpha", float)):
        feed.add_argument(f"--{name}", type=kind, default=None,
                          help=f"override the --augment preset's {name}")

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default="resnet50", choices=list(backbones.BACKBONES))
    model.add_argument("--pretrained_weights", default="",
                       help="notop weights file (local, obs://, s3://); default: "
                            "pretrained/<Keras file name>, else random (with a warning)")
    model.add_argument("--num_classes", type=int, default=0, help="0 = from the data")
    model.add_argument("--dropout", type=float, default=0.3)
    model.add_argument("--loss", default="categorical_crossentropy")
    model.add_argument("--label_smoothing", type=float, default=0.1)
    model.add_argument("--head", default="softmax", choices=list(heads.HEADS),
                       help="cosine heads (normface, cosface, arcface) give the better "
                            "embedding for retrieve.py")
    model.add_argument("--head_scale", type=float, default=30.0,
                       help="cosine heads: the scale s of softmax(s x cos)")
    model.add_argument("--head_margin", type=float, default=None,
                       help="cosface / arcface margin (default 0.35 / 0.5), in the loss only")

    fit = parser.add_argument_group("training")
    fit.add_argument("--max_epochs", type=positive, default=30)
    fit.add_argument("--learning_rate", type=float, default=1e-3)
    fit.add_argument("--freeze_epochs", type=int, default=1,
                     help="head-only warm-up epochs before every layer trains")
    fit.add_argument("--optimizer", default="adam", choices=list(optim.OPTIMIZERS))
    fit.add_argument("--weight_decay", type=float, default=None,
                     help="decoupled weight decay (w -= lr x wd x w), biases and BatchNorm "
                          "excluded; default: 0 for adam, 0.05 for adamw, 5e-4 for sgd")
    fit.add_argument("--momentum", type=float, default=0.9, help="sgd")
    fit.add_argument("--lr_schedule", default="cosine", choices=list(optim.SCHEDULES))
    fit.add_argument("--warmup_epochs", type=float, default=1.0, help="cosine")
    fit.add_argument("--step_epochs", type=int, default=10, help="step")
    fit.add_argument("--step_gamma", type=float, default=0.1, help="step")
    fit.add_argument("--plateau_patience", type=int, default=3, help="plateau")
    fit.add_argument("--plateau_factor", type=float, default=0.5, help="plateau")
    fit.add_argument("--early_stop_patience", type=int, default=10, help="0 = off")
    fit.add_argument("--clipnorm", type=float, default=0.0, help="clip the gradient's global "
                                                                 "norm (0 = off)")
    fit.add_argument("--mixed_precision", default="auto", choices=["auto", "true", "false"],
                     help="auto: on when a GPU is present")
    fit.add_argument("--xla", default="auto", choices=["auto", "true", "false"],
                     help="auto: on when a GPU is present")
    fit.add_argument("--steps_per_execution", type=positive, default=1,
                     help="training steps per compiled call: more cuts the host's per-step "
                          "overhead for small models (Keras' steps_per_execution)")
    fit.add_argument("--keep_weights_file_num", type=int, default=3,
                     help="best weight files kept, by val_accuracy")
    fit.add_argument("--worker_port", type=int, default=distribute.DEFAULT_PORT,
                     help="port of the workers of a multi-node job")

    out = parser.add_argument_group("evaluation and export")
    out.add_argument("--mode", default="train", choices=["train", "eval", "predict"],
                     help="eval: reports for --eval_model on labelled --test_data_url; "
                          "predict: top-k classes of the images in --test_data_url")
    out.add_argument("--eval_model", default="", help="eval/predict: a model/ package, a "
                     "train_url holding one, or a .weights.h5 file of a run")
    out.add_argument("--test_data_url", default="", help="eval: labelled images (any layout); "
                                                         "predict: a folder of images")
    out.add_argument("--top_k", type=positive, default=5, help="predict: classes per image")
    out.add_argument("--export_model", type=boolean, default=True,
                     help="write the ModelArts model package to {train_url}/model")
    out.add_argument("--overwrite_model", type=boolean, default=False,
                     help="replace an existing {train_url}/model")
    out.add_argument("--runtime", default="",
                     help="config.json runtime, the ModelArts inference image to deploy on "
                          "(default: the one in the top-level config.json)")
    return parser


def parse_args(argv=None):
    """Flags (unknown ones returned apart); the demo's settings fill what the user left unset."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    given = {a.split("=")[0].lstrip("-") for a in (argv if argv is not None else sys.argv)
             if a.startswith("--")}
    _mode_default_train_url(args, given)
    if not args.data_url and args.mode == "train":
        for name, value in DEMO.items():
            if name not in given:
                setattr(args, name, value)
    return args, unknown
