"""The ModelArts training job.

    python train.py --data_url=obs://bucket/garbage/train_data/ --train_url=obs://bucket/out/
    python train.py --mode=eval --eval_model=out/model --test_data_url=test/ --train_url=out/test
    python train.py --mode=predict --eval_model=out/model --test_data_url=new_images/

`data_url` and `train_url` may be obs://, s3:// or local paths; with no --data_url the job runs
on the built-in demo data with a small configuration. Flags the platform adds are logged and
ignored. A training run fetches, screens and splits the data, trains (one custom loop on
tf.distribute, with resume), evaluates the best weights on the validation set and writes the
model package to {train_url}/model/. This file only orchestrates: each stage lives in its own
package (inputs/, models/, training/, evaluation/, export/).
"""
import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)  # ModelArts runs the boot file from another working directory
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter, not our log

import runtime_check  # noqa: E402

runtime_check.check("train.py")  # one line on an old Python/TensorFlow, before any import fails

import obs_utils  # noqa: E402
from cli import boolean, positive, run_job, setup_logging  # noqa: E402
from errors import UserError  # noqa: E402
from inputs import augment, balance, fetch, prepare, screening  # noqa: E402
from models import backbones, heads, weights  # noqa: E402
from training import distribute, optim  # noqa: E402
from version import VERSION  # noqa: E402

log = logging.getLogger("train")

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


def versions():
    """Installed versions of what the run depends on (read from metadata: no heavy imports)."""
    import importlib.metadata

    found = {"modelarts-classifier": VERSION, "python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "boto3"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def work_dir_for(train_url, cache_root, tf_config):
    """Local folder for the outputs: for the chief, train_url itself when local, else a cache
    folder named after train_url (the same for a restarted job); for the other workers of a
    multi-node job, a scratch folder of their own, so nothing of the chief's is overwritten."""
    if distribute.is_chief(tf_config) and not obs_utils.is_remote(train_url):
        os.makedirs(train_url, exist_ok=True)
        return train_url
    digest = hashlib.sha1(train_url.rstrip("/").encode()).hexdigest()[:12]
    who = "chief" if distribute.is_chief(tf_config) else f"worker-{tf_config['task']['index']}"
    folder = os.path.join(cache_root, "jobs", digest, who)
    os.makedirs(folder, exist_ok=True)
    return folder


def package_plan(args):
    """(keep the package in train_url, overwrite it), decided before any training: an existing
    package is refused now, not after hours, unless --overwrite_model; the same job restarted
    after it finished (ModelArts' auto restart) keeps the one it wrote, or writes it again when
    its upload was cut short. Every worker decides alike, so all stop together."""
    from export import package
    from training import checkpoints

    if not args.export_model:
        return False, False
    if args.overwrite_model or not package.exists(args.train_url):
        return False, args.overwrite_model
    if checkpoints.job_finished(args.train_url, args.max_epochs):
        if package.complete(args.train_url):
            return True, False
        log.warning("%s is incomplete (its upload was cut short?): this job writes it again",
                    package.model_url(args.train_url))
        return False, True
    package.check_destination(args.train_url, overwrite=False)  # raises, saying what to do
    return False, False


def train_and_export(args, unknown, cache_root):
    """The training job: data, training, then (chief) evaluation of the best weights on the
    validation set and the model package. Returns the one-line summary."""
    started = time.time()
    tf_config = distribute.cluster_from_env(port=args.worker_port)
    chief = distribute.is_chief(tf_config)
    # Before any other TensorFlow work: MultiWorkerMirroredStrategy must come first.
    strategy = distribute.make_strategy(tf_config)
    from evaluation import inference, stage
    from export import package
    from training import job

    keep_package, overwrite = package_plan(args)
    # The weights file is fetched, read and matched now: a wrong one stops the job before any
    # data is screened or anything is written to train_url.
    pretrained = weights.prepare(args.backbone, args.pretrained_weights, cache_root,
                                 args.input_size)
    settings = augment.resolve(args.augment, {
        name: getattr(args, name) for name in augment.DEFAULTS})
    data_dir = fetch.fetch_data(args.data_url, cache_root, threads=args.obs_threads)
    val_dir = (fetch.fetch_data(args.val_data_url, cache_root, threads=args.obs_threads)
               if args.val_data_url else None)
    # Every worker prepares the same data (same seed, or the split already saved); only the
    # chief writes to train_url.
    data = prepare.prepare(data_dir, args.train_url, cache_root, args.data_format,
                           args.manifest or None, val_dir, args.val_ratio, args.seed,
                           args.max_image_pixels, args.min_image_side, write=chief,
                           drop_val_copies=args.drop_val_copies)
    if args.num_classes and args.num_classes != len(data.class_names):
        raise UserError(f"--num_classes={args.num_classes} but the data has "
                         f"{len(data.class_names)} classes; leave it at 0 to take the data's")
    counts = screening.class_counts(data.train, len(data.class_names))
    balance.log_plan(counts, args.balance, data.class_names, len(data.train))
    run_config = {"flags": vars(args), "ignored_flags": unknown, "versions": versions(),
                  "local_data_dir": data_dir, "augmentation": settings,
                  "classes": len(data.class_names), "train_images": len(data.train),
                  "val_images": len(data.val), "cluster": tf_config}
    if chief:
        obs_utils.write_text(obs_utils.join(args.train_url, "run_config.json"),
                             json.dumps(run_config, indent=2, ensure_ascii=False))
    work_dir = work_dir_for(args.train_url, cache_root, tf_config)
    result = job.train(args, data, settings, work_dir, strategy, chief, pretrained)
    if not chief:
        return f"worker done in {time.time() - started:.0f} s; the chief writes the outputs"
    model = job.final_model(args, data.class_names, result)
    probabilities = inference.keras_probabilities(model, data.val, args.input_size,
                                                  args.resize_mode, args.batch_size)
    metrics = stage.evaluate(data.val, probabilities, data.class_names, args.train_url,
                             work_dir, result.log_csv)
    where = "no model package (--export_model=false)"
    if keep_package:
        where = f"the package this job wrote before, kept: {package.model_url(args.train_url)}"
    elif args.export_model:
        url = package.export(model, data.class_names, args.input_size, args.resize_mode,
                             metrics, args.train_url, work_dir, args.runtime, overwrite)
        where = f"model package {url}"
    return (f"done in {time.time() - started:.0f} s: {len(result.history)} epochs run now; "
            f"best weights on validation: top-1 {metrics['top1_accuracy']:.4f}, macro F1 "
            f"{metrics['macro']['f1']:.4f}; {where}; reports in "
            f"{obs_utils.join(args.train_url, stage.FOLDER)}")


def evaluate_or_predict(args, cache_root):
    """--mode=eval (reports on labelled images) or --mode=predict (top-k of unlabelled ones)
    for --eval_model; returns the one-line summary."""
    if not args.eval_model or not args.test_data_url:
        raise UserError(f"--mode={args.mode} needs --eval_model (a model/ folder, a train_url "
                         "or a .weights.h5 file) and --test_data_url (the images)")
    from evaluation import inference, stage

    predictor = inference.load(args.eval_model, cache_root, args.batch_size)
    data_dir = fetch.fetch_data(args.test_data_url, cache_root, threads=args.obs_threads)
    work_dir = work_dir_for(args.train_url, cache_root, None)
    report_url = obs_utils.join(args.train_url, "screening_report_test.json")
    if args.mode == "eval":
        samples = prepare.prepare_test(data_dir, predictor.class_names, report_url, cache_root,
                                       args.data_format, args.manifest or None,
                                       args.max_image_pixels, args.min_image_side)
        metrics = stage.evaluate(samples, predictor.probabilities(samples),
                                 predictor.class_names, args.train_url, work_dir)
        return (f"evaluated {predictor.source} on {len(samples)} images: top-1 "
                f"{metrics['top1_accuracy']:.4f}; reports in "
                f"{obs_utils.join(args.train_url, stage.FOLDER)}")
    samples = prepare.prepare_unlabelled(data_dir, report_url, cache_root,
                                         args.max_image_pixels, args.min_image_side)
    url = stage.predict(samples, predictor.probabilities(samples), predictor.class_names,
                        args.train_url, work_dir, args.top_k)
    return f"top-{args.top_k} classes of {len(samples)} images in {url}"


def main(argv=None):
    setup_logging()
    args, unknown = parse_args(argv)
    if unknown:
        log.warning("ignoring flags this job does not know (the platform adds some): %s",
                    " ".join(unknown))

    def job():
        cache_root = fetch.resolve_cache_root(args.local_data_root)
        if args.mode == "train":
            return train_and_export(args, unknown, cache_root)
        return evaluate_or_predict(args, cache_root)

    return run_job(job, (obs_utils.ObsError, UserError), log)


if __name__ == "__main__":
    sys.exit(main())
