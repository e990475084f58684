"""train.py's flags: the table (every option a flag, with its default), the demo's settings
for what the user leaves unset, and the parse. train.py orchestrates; this is what it reads.
Nothing here imports TensorFlow, so `--help` and a bad flag are answered at once: the choices
are named here, and tests/test_config.py holds each list against the code that implements it."""
import os
import sys

from cli import (ArgumentParser, HelpFormatter, above_zero, boolean, not_negative, positive,
                 url_list, weight_list)

BACKBONES = ("resnet50", "resnet101", "densenet121", "efficientnetb0", "efficientnetb1",
             "efficientnetb2", "efficientnetb3", "efficientnetb4", "mobilenetv3small",
             "mobilenetv3large", "xception")          # models/backbones.BACKBONES
HEADS = ("softmax", "normface", "cosface", "arcface", "subcenter_arcface")  # models/heads.HEADS
POOLINGS = ("avg", "max", "gem")                      # models/build.POOLINGS
AUGMENT_PRESETS = ("none", "light", "standard", "strong", "randaugment", "augmix")  # augment.PRESETS
AUGMENT_OPS = (("flip", str), ("rotation", float), ("zoom", float), ("shift", float),
               ("brightness", float), ("contrast", float), ("saturation", float),
               ("hue", float), ("cutmix_prob", float), ("cutmix_alpha", float),
               ("mixup_prob", float), ("mixup_alpha", float), ("randaugment_ops", int),
               ("randaugment_strength", float), ("augmix_chains", int),
               ("augmix_depth", int), ("augmix_strength", float))  # inputs/augment.DEFAULTS
BALANCE_POLICIES = ("none", "oversample", "sqrt", "class_weight")  # inputs/balance.POLICIES
SAMPLERS = ("random", "pk")                           # inputs/balance.SAMPLERS
OPTIMIZERS = ("adam", "sgd", "adamw", "ranger")       # training/optim.OPTIMIZERS
SCHEDULES = ("plateau", "cosine", "sgdr", "step")     # training/optim.SCHEDULES
LOSSES = ("categorical_crossentropy", "focal")         # models/losses.ALLOWED
MONITORS = ("val_accuracy", "val_macro_recall", "val_gap", "val_loss")  # models/run_weights.MONITORS
TTA = ("none", "flip", "crops")                       # inputs/tta.CHOICES
MODES = ("train", "eval", "predict", "ensemble", "oof", "clean")
CLEAN_RULES = ("auto", "confidence", "cleanlab")          # evaluation/label_issues.RULES
MAX_IMAGE_PIXELS = 64_000_000                         # inputs/screening.MAX_PIXELS
MIN_IMAGE_SIDE = 8                                    # inputs/screening.MIN_SIDE
WORKER_PORT = 2222                                    # training/distribute.DEFAULT_PORT

# What the demo (no --data_url) runs with, for every flag the user leaves unset: small enough
# to finish in minutes on a 2-core machine.
DEMO = {"backbone": "mobilenetv3small", "input_size": 32, "batch_size": 32, "max_epochs": 8,
        "learning_rate": 2e-3, "freeze_epochs": 0, "flip": "none", "augment": "light",
        "train_url": os.path.join("outputs", "demo")}

# What --task=retrieval trains with, for every flag the user leaves unset: on classes training
# never saw it scored as well as the defaults (top-1 higher, mAP@10 lower, within noise) with a
# 16x smaller embedding (bench/retrieval_transfer.py; README).
TASKS = {"classification": {},
         "retrieval": {"head": "subcenter_arcface", "head_scale": 16.0, "pooling": "gem",
                       "embedding_dim": 128}}


def _mode_default_train_url(args, given):
    """Training writes to outputs/run (demo: outputs/demo); eval and predict to outputs/<mode>,
    so they never mix their reports into a training run's by default."""
    if "train_url" not in given and args.mode != "train":
        args.train_url = os.path.join("outputs", args.mode)


def build_parser():
    # No abbreviations: the platform adds flags of its own, and `--batch=64` must not silently
    # become something else; an unknown flag is reported instead.
    parser = ArgumentParser(
        prog="train.py", description="Train an image classifier the way ModelArts runs it. "
        "With no --data_url it runs the built-in demo, on a small backbone for 8 epochs so "
        "that it ends in about a minute on a laptop (the 'demo:' values below).",
        formatter_class=lambda prog: HelpFormatter(
            prog, presets={"demo": DEMO, "--task=retrieval": TASKS["retrieval"]}),
        allow_abbrev=False)
    add = parser.add_argument
    add("--data_url", default="", help="training images: obs://, s3:// or a local folder; "
                                       "empty = the built-in demo data")
    add("--train_url", default=os.path.join("outputs", "run"),
        help="where the outputs go: obs://, s3:// or a local folder")
    add("--local_data_root", default="", help="local cache; empty = /cache if writable, "
                                              "else ~/.cache/modelarts-classifier")
    add("--obs_threads", type=positive, default=16, help="parallel transfers when syncing with OBS")
    add("--task", default="classification", choices=sorted(TASKS),
        help="retrieval: the settings that train an embedding for retrieve.py (those marked "
             "'--task=retrieval:' below), each still overridable")

    data = parser.add_argument_group("data")
    data.add_argument("--data_format", default="auto",
                      choices=["auto", "garbage", "folders", "manifest"],
                      help="the layout of data_url (README: Data layouts); auto tells it apart")
    data.add_argument("--manifest", default="", help="manifest file, relative to data_url")
    data.add_argument("--val_data_url", default="",
                      help="an explicit validation set (any layout); empty = split from data_url")
    data.add_argument("--drop_val_copies", type=boolean, default=True,
                      help="with --val_data_url: leave out of training the images that are "
                           "exact copies of validation images")
    data.add_argument("--val_ratio", type=float, default=0.2,
                      help="share of each class held out for validation (stratified)")
    data.add_argument("--min_images_per_class", type=not_negative, default=0,
                      help="train on the classes with at least this many usable images; the "
                           "others are listed in class_counts.json (0: no limit)")
    data.add_argument("--max_images_per_class", type=not_negative, default=0,
                      help="... and at most this many (0: no limit)")
    data.add_argument("--max_train_per_class", type=not_negative, default=0,
                      help="at most this many training images of a class, drawn with --seed "
                           "and saved with the split (0: all)")
    data.add_argument("--label_levels_sep", default="",
                      help="class names hold coarser levels before this separator ('/': "
                           "'可回收物/易拉罐' is the item under its category); evaluation then "
                           "reports each level too (empty: one level)")
    data.add_argument("--kfold", type=int, default=0,
                      help="K >= 2: K models, one per stratified fold of the data, each "
                           "validated on its own fold, in {train_url}/folds/<i>/; then the "
                           "out-of-fold probabilities ({train_url}/oof.csv) and the "
                           "cross-validated accuracy (metrics.json). 0: one model")
    data.add_argument("--fold", type=int, default=-1,
                      help="with --kfold: train this fold alone (folds as separate jobs; "
                           "--mode=oof gathers them); -1: every fold in turn")
    data.add_argument("--distill_from", default="",
                      help="the train_url of a finished --kfold run on the same data: train on "
                           "--distill_weight * one-hot + (1 - it) * its out-of-fold "
                           "probabilities (a distilled round; with --kfold too)")
    data.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the batches and the augmentation")
    data.add_argument("--max_image_pixels", type=int, default=MAX_IMAGE_PIXELS,
                      help="images with more pixels are left out (decompression bombs)")
    data.add_argument("--min_image_side", type=int, default=MIN_IMAGE_SIDE,
                      help="images with a shorter side are left out")

    feed = parser.add_argument_group("input pipeline")
    feed.add_argument("--input_size", type=positive, default=224,
                      help="side of the square the model sees, in pixels")
    feed.add_argument("--distill_weight", type=float, default=0.5,
                      help="with --distill_from: the one-hot label's share of the target")
    feed.add_argument("--resize_mode", default="letterbox", choices=["letterbox", "stretch"],
                      help="letterbox keeps the aspect ratio (black bars); the same in serving")
    feed.add_argument("--batch_size", type=positive, default=32, help="per GPU (replica)")
    feed.add_argument("--balance", default="oversample", choices=BALANCE_POLICIES,
                      help="against class imbalance: oversample draws every class equally "
                           "often, sqrt by the root of its size, class_weight weighs the loss")
    feed.add_argument("--sampler", default="random", choices=SAMPLERS,
                      help="random: each draw on its own; pk: each batch P = batch_size / "
                           "--pk_images classes, K = --pk_images images of each (metric "
                           "learning's P x K batches; classes drawn as --balance=oversample)")
    feed.add_argument("--pk_images", type=positive, default=4,
                      help="--sampler=pk: K, images of each class in a batch")
    feed.add_argument("--augment", default="standard", choices=AUGMENT_PRESETS,
                      help="augmentation preset (inputs/augment.py); the flags below override "
                           "its parts")
    feed.add_argument("--cache_images", type=boolean, default=False,
                      help="keep the decoded images in memory after the first epoch")
    feed.add_argument("--deterministic", type=boolean, default=False,
                      help="the same batches in the same order on every run (slower input)")
    for name, kind in AUGMENT_OPS:
        what = "none|horizontal|vertical|both" if name == "flip" else kind.__name__
        feed.add_argument(f"--{name}", type=kind, default=None,
                          help=f"{what}: override the --augment preset's {name} "
                               "(default: the preset's)")

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", default="resnet50", choices=BACKBONES, metavar="NAME",
                       help=f"one of {', '.join(BACKBONES)}")
    model.add_argument("--pretrained_weights", default="",
                       help="notop weights file (local, obs://, s3://); default: "
                            "pretrained/<Keras file name>, else random (with a warning)")
    model.add_argument("--init_from", default="",
                       help="an earlier run (its train_url, or a weights file of it): its "
                            "backbone, and its classifier where the classes are the same "
                            "(staged training); not with --pretrained_weights")
    model.add_argument("--zero_init_residual", type=boolean, default=True,
                       help="from random weights: start each residual block as the identity "
                            "(its last BatchNorm's scale at 0), for a stable start")
    model.add_argument("--num_classes", type=int, default=0,
                       help="0 = from the data; else checked against it")
    model.add_argument("--pooling", default="avg", choices=POOLINGS,
                       help="how the backbone's feature map becomes one vector: average, max, "
                            "or GeM (generalised mean, its exponent learned; for retrieval)")
    model.add_argument("--embedding_dim", type=int, default=0,
                       help="> 0: a neck (linear projection to this size + BatchNorm) between "
                            "the pooling and the head; retrieve.py embeds its output. 0 = none")
    model.add_argument("--dropout", type=float, default=0.3, help="before the classifier")
    model.add_argument("--loss", default="categorical_crossentropy",
                       help=f"the classification loss: {' or '.join(LOSSES)} (focal: "
                            "-(1-p)^gamma log p; binary_crossentropy is refused)")
    model.add_argument("--focal_gamma", type=float, default=2.0,
                       help="--loss=focal: the focusing exponent (0 = crossentropy)")
    model.add_argument("--label_smoothing", type=float, default=0.1,
                       help="share of each target spread over the other classes")
    model.add_argument("--head", default="softmax", choices=HEADS,
                       help="cosine heads (normface, cosface, arcface, subcenter_arcface) "
                            "give the better embedding for retrieve.py")
    model.add_argument("--head_scale", type=float, default=30.0,
                       help="cosine heads: the scale s of softmax(s x cos)")
    model.add_argument("--head_margin", type=float, default=None,
                       help="cosface / arcface margin, in the loss only (default: 0.35 / 0.5)")
    model.add_argument("--subcenters", type=positive, default=3,
                       help="subcenter_arcface: weight vectors per class, the nearest counts "
                            "(Deng et al. 2020: a class's noisy images gather at their own)")

    fit = parser.add_argument_group("training")
    fit.add_argument("--max_epochs", type=positive, default=30, help="epochs to train for")
    fit.add_argument("--learning_rate", type=float, default=1e-3,
                     help="peak learning rate, for the global batch")
    fit.add_argument("--freeze_epochs", type=int, default=1,
                     help="head-only epochs before every layer trains (skipped from random "
                          "weights)")
    fit.add_argument("--unfreeze_every", type=not_negative, default=0,
                     help="with pretrained weights, after --freeze_epochs: unfreeze the "
                          "backbone one stage at a time from the top, one more every N epochs "
                          "(0: every layer at once)")
    fit.add_argument("--freeze_backbone", type=boolean, default=False,
                     help="train the head alone for the whole run (on a pretrained or "
                          "--init_from backbone)")
    fit.add_argument("--backbone_lr_mult", type=above_zero, default=1.0,
                     help="the backbone's learning rate (and weight decay) as a multiple of "
                          "--learning_rate, which the head keeps; e.g. 0.1 to fine-tune "
                          "pretrained weights gently")
    fit.add_argument("--optimizer", default="adam", choices=OPTIMIZERS,
                     help="adam, sgd (Nesterov momentum), adamw, or ranger (RAdam inside "
                          "Lookahead: k 6, alpha 0.5)")
    fit.add_argument("--weight_decay", type=float, default=None,
                     help="decoupled weight decay (w -= lr x wd x w), biases and BatchNorm "
                          "excluded (default: 0 for adam and ranger, 0.05 for adamw, 5e-4 "
                          "for sgd)")
    fit.add_argument("--momentum", type=float, default=0.9, help="sgd's momentum")
    fit.add_argument("--lr_schedule", default="cosine", choices=SCHEDULES,
                     help="cosine (with warm-up), sgdr (warm-up, then cosine with warm "
                          "restarts), step, or plateau (ReduceLROnPlateau)")
    fit.add_argument("--warmup_epochs", type=float, default=1.0,
                     help="cosine and sgdr: linear warm-up from 0")
    fit.add_argument("--restart_epochs", type=float, default=5.0,
                     help="sgdr: epochs of the first cosine cycle")
    fit.add_argument("--restart_mult", type=float, default=2.0,
                     help="sgdr: each cycle this many times as long as the one before")
    fit.add_argument("--step_epochs", type=int, default=10, help="step: epochs per step")
    fit.add_argument("--step_gamma", type=float, default=0.1, help="step: factor per step")
    fit.add_argument("--plateau_patience", type=int, default=3,
                     help="plateau: epochs without a better --monitor before a cut")
    fit.add_argument("--plateau_factor", type=float, default=0.5, help="plateau: factor per cut")
    fit.add_argument("--early_stop_patience", type=int, default=10,
                     help="stop after this many epochs without a better --monitor; 0 = off")
    fit.add_argument("--clipnorm", type=float, default=0.0,
                     help="clip the gradient's global norm; 0 = off")
    fit.add_argument("--grad_centralization", type=boolean, default=True,
                     help="subtract from each kernel's gradient its mean (any optimizer)")
    fit.add_argument("--ema", type=float, default=0.0,
                     help="keep a moving average of the weights with this momentum (e.g. "
                          "0.99) and validate, choose and export it; 0 = off")
    fit.add_argument("--monitor", default="val_accuracy", choices=MONITORS,
                     help="what picks the best weights and drives plateau and early stopping")
    fit.add_argument("--mixed_precision", default="auto", choices=["auto", "true", "false"],
                     help="float16 compute; auto: on when a GPU is present")
    fit.add_argument("--xla", default="auto", choices=["auto", "true", "false"],
                     help="compile the step with XLA; auto: on when a GPU is present")
    fit.add_argument("--steps_per_execution", type=positive, default=1,
                     help="training steps per compiled call: more cuts the host's per-step "
                          "overhead for small models (Keras' steps_per_execution)")
    fit.add_argument("--level_weights", type=weight_list, default=(), metavar="W[,W...]",
                     help="with --label_levels_sep: train an auxiliary head per coarser level "
                          "(coarsest first), its crossentropy weighted by W beside the "
                          "classes' own; empty = no auxiliary heads")
    fit.add_argument("--save_steps", type=not_negative, default=0,
                     help="also checkpoint every N steps within an epoch, and resume there at "
                          "the same place in the data stream (large sets: hours per epoch); "
                          "0 = at the end of each epoch only")
    fit.add_argument("--keep_weights_file_num", type=int, default=3,
                     help="best weight files kept, by --monitor")
    fit.add_argument("--worker_port", type=int, default=WORKER_PORT,
                     help="port of the workers of a multi-node job")

    out = parser.add_argument_group("evaluation and export")
    out.add_argument("--mode", default="train", choices=MODES,
                     help="eval: reports for --eval_model on labelled --test_data_url; "
                          "predict: top-k classes of the images in --test_data_url; "
                          "ensemble: one package of the --members models (evaluated on "
                          "--test_data_url when given); oof: gather the folds of the --kfold "
                          "run in --train_url; clean: label_issues.csv and a cleaned manifest "
                          "of --data_url's labels, by --eval_model's probabilities")
    out.add_argument("--eval_model", default="", help="eval/predict/clean: a model/ package, a "
                     "train_url holding one, or a .weights.h5 file of a run (clean: also a "
                     "--kfold run's train_url, for its out-of-fold probabilities)")
    out.add_argument("--test_data_url", default="", help="eval: labelled images (any layout); "
                                                         "predict: a folder of images")
    out.add_argument("--top_k", type=positive, default=5, help="predict: classes per image")
    out.add_argument("--clean_rule", default="auto", choices=CLEAN_RULES,
                     help="clean: confidence (the seed's per-class rule on --eval_model's "
                          "predictions), cleanlab (find_label_issues on a --kfold run's "
                          "out-of-fold probabilities); auto: cleanlab when --eval_model is a "
                          "--kfold run with oof.csv, else confidence")
    out.add_argument("--clean_keep_accuracy", type=float, default=0.92,
                     help="clean, confidence rule: a class predicted at least this well keeps "
                          "every image")
    out.add_argument("--tta", default="none", choices=TTA,
                     help="test-time views the package's serving averages: flip (the image "
                          "and its mirror), crops (those and the four corners of a 1.15x "
                          "enlargement); the validation metrics are taken the same way")
    out.add_argument("--members", type=url_list, default=(), metavar="URL[,URL[,URL]]",
                     help="ensemble: 1-3 model/ packages or train_urls of finished runs, "
                          "trained on the same classes (any backbone and input size)")
    out.add_argument("--member_weights", type=weight_list, default=(), metavar="W[,W[,W]]",
                     help="ensemble: each member's weight in the mean of probabilities; "
                          "empty = equal")
    out.add_argument("--export_model", type=boolean, default=True,
                     help="write the ModelArts model package to {train_url}/model")
    out.add_argument("--overwrite_model", type=boolean, default=False,
                     help="replace an existing {train_url}/model")
    out.add_argument("--runtime", default="",
                     help="config.json runtime, the ModelArts inference image to deploy on; "
                          "empty = the one in the top-level config.json")
    return parser


def parse_args(argv=None):
    """Flags (unknown ones returned apart); the demo's and then --task's settings fill what the
    user left unset."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    given = {a.split("=")[0].lstrip("-") for a in (argv if argv is not None else sys.argv)
             if a.startswith("--")}
    _mode_default_train_url(args, given)
    if not args.data_url and args.mode == "train":
        for name, value in DEMO.items():
            if name not in given:
                setattr(args, name, value)
    for name, value in TASKS[args.task].items():
        if name not in given:
            setattr(args, name, value)
    return args, unknown
