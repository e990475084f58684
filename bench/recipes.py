"""Training recipes side by side on held-out data: each recipe (a set of train.py flags) is
trained on the train split of a set built by ../shared/devdata/make_photo_set.py (or any
folder with train/ and test/ in the folders layout), once per seed, and scored by
`train.py --mode=eval` on the test split, whose crops come from regions of the photos that
training never saw. Prints held-out top-1 mean +- sd per recipe, and the wall time.

    python ../shared/devdata/make_photo_set.py /tmp/photos --layout folders
    python bench/recipes.py --data=/tmp/photos --recipes=default,light --seeds=0,1,2

The same backbone, input size, epochs and batch for every row (--backbone, --input_size,
--epochs, --batch_size), so a row differs from `default` only by its own flags.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import mean_sd, report, run_script  # noqa: E402


# name -> the flags it adds to the common ones. `default` is train.py as it stands.
RECIPES = {
    "default": [],
    "no_zero_init": ["--zero_init_residual=false"],
    "light_sgd": ["--augment=light", "--optimizer=sgd", "--learning_rate=0.05"],
    "light_lr3e-4": ["--augment=light", "--learning_rate=3e-4"],
    "focal": ["--loss=focal"],
    "sgdr": ["--lr_schedule=sgdr", "--restart_epochs=5", "--restart_mult=2"],
    "gc": ["--grad_centralization=true"],
    "no_gc": ["--grad_centralization=false"],
    "gc_lr3e-3": ["--grad_centralization=true", "--learning_rate=3e-3"],
    "ema": ["--ema=0.99"],
    "ema0.95": ["--ema=0.95"],
    "lr3e-3_light": ["--learning_rate=3e-3", "--augment=light"],
    "balance_none": ["--balance=none"],
    "dropout0": ["--dropout=0"],
    "light": ["--augment=light"],
    "none": ["--augment=none"],
    "randaugment": ["--augment=randaugment"],
    "augmix": ["--augment=augmix"],
    "standard_randaugment": ["--randaugment_ops=2"],
    "lr3e-4": ["--learning_rate=3e-4"],
    "lr3e-3": ["--learning_rate=3e-3"],
    "warmup3": ["--warmup_epochs=3"],
    "adamw": ["--optimizer=adamw"],
    "ranger": ["--optimizer=ranger"],
    "ranger_gc": ["--optimizer=ranger", "--grad_centralization=true"],
    "ranger_lr3e-3": ["--optimizer=ranger", "--learning_rate=3e-3"],
    "sgd": ["--optimizer=sgd", "--learning_rate=0.1"],
    "sgd0.03": ["--optimizer=sgd", "--learning_rate=0.03"],
    "no_smoothing": ["--label_smoothing=0"],
    "clip1": ["--clipnorm=1.0"],
    # Fine-tuning controls: meant with --extra=--pretrained_weights=FILE (a backbone trained
    # on another set, e.g. by train.py on the digits: its best weights file).
    "lr_mult0.1": ["--backbone_lr_mult=0.1"],
    "lr_mult0.3": ["--backbone_lr_mult=0.3"],
    "freeze0": ["--freeze_epochs=0"],
    "unfreeze1": ["--unfreeze_every=1"],
    "unfreeze2": ["--unfreeze_every=2"],
}


def run_recipe(name, flags, seed, args, scratch):
    """Train one recipe with one seed, then score its package on the test split: (top-1,
    seconds of training)."""
    out = os.path.join(scratch, f"{name}-{seed}")
    common = [f"--local_data_root={os.path.join(scratch, 'cache')}"]
    train = ["train.py", f"--data_url={os.path.join(args.data, 'train')}",
             f"--train_url={out}", f"--backbone={args.backbone}",
             f"--input_size={args.input_size}", f"--max_epochs={args.epochs}",
             f"--batch_size={args.batch_size}", f"--seed={seed}", *common, *args.extra.split(),
             *flags]
    _, seconds = run_script(train, f"{name} seed {seed}")
    evaluate = ["train.py", "--mode=eval", f"--eval_model={out}/model",
                f"--test_data_url={os.path.join(args.data, 'test')}",
                f"--train_url={out}-test", *common]
    run_script(evaluate, f"{name} seed {seed} eval")
    with open(os.path.join(f"{out}-test", "evaluation", "metrics.json")) as f:
        return json.load(f)["top1_accuracy"], seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder holding train/ and test/")
    parser.add_argument("--recipes", default="default,light", help=f"of {', '.join(RECIPES)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--extra", default="",
                        help="train.py flags added to every row, e.g. '--xla=true' (XLA halved "
                             "the CPU time of ResNet50 at 32 px) or '--pretrained_weights=FILE'")
    parser.add_argument("--name", default="recipes", help="bench/results/<name>.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.recipes.split(","):
            scores, times = [], []
            for seed in seeds:
                top1, seconds = run_recipe(name, RECIPES[name], seed, args, scratch)
                scores.append(top1)
                times.append(seconds)
                print(f"{name} seed {seed}: held-out top-1 {top1:.3f} ({seconds:.0f} s)",
                      flush=True)
            rows.append({"recipe": name, "flags": " ".join(RECIPES[name]) or "(train.py's)",
                         "held_out_top1": mean_sd(scores),
                         "scores": " ".join(f"{s:.3f}" for s in scores),
                         "train_s": f"{statistics.mean(times):.0f}"})
    report(args.name, rows, ["recipe", "held_out_top1", "scores", "train_s", "flags"],
           {"backbone": args.backbone, "input_size": args.input_size, "epochs": args.epochs,
            "batch_size": args.batch_size, "seeds": seeds, "data": args.data,
            "extra": args.extra})


if __name__ == "__main__":
    main()
