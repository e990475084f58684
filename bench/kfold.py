"""What k-fold, its distilled round and an ensemble of the best folds buy on held-out data,
per seed, on the train split of a set built by ../shared/devdata/make_photo_set.py (test:
crops of regions training never saw), with train.py's defaults unless --extra says otherwise:

    one model                     train.py on the whole train split (its own 20 % validation)
    k-fold mean of K              the K fold models' mean probability (no package: K > 3)
    best <= 3 folds, tta none/flip  --mode=ensemble of the folds best on their own held-out
                                  fold (chosen without the test split)
    distilled                     one model trained with --distill_from the k-fold run

Prints held-out top-1 mean +- sd over the seeds and the training wall time of each.

    python bench/kfold.py --data=/tmp/photos --seeds=0,1,2 --extra=--xla=true
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



def run(args, what):
    """train.py with `args`: the seconds it took (SystemExit with its log if it failed)."""
    return run_script(["train.py", *args], what)[1]


def held_out_of(out):
    with open(os.path.join(out, "evaluation", "metrics.json")) as f:
        return json.load(f)["top1_accuracy"]


def mean_of_folds(folders, test_dir, cache_root):
    """Held-out top-1 of the mean probability of the packages in `folders` on the test split
    (each through its own serving signature)."""
    import numpy as np

    from evaluation import inference
    from inputs import label_map, prepare

    names = label_map.load(os.path.join(folders[0], "model", label_map.FILE_NAME))
    samples = prepare.prepare_test(test_dir, names, os.path.join(cache_root, "screen.json"),
                                   cache_root)
    total = sum(inference.saved_model_probabilities(os.path.join(f, "model"),
                                                    [s.path for s in samples])
                for f in folders)
    return float(np.mean(total.argmax(1) == np.array([s.label for s in samples])))


def one_seed(seed, args, scratch):
    """{row: (held-out top-1, training seconds)} for one seed."""
    data = [f"--data_url={os.path.join(args.data, 'train')}"]
    test = os.path.join(args.data, "test")
    common = [f"--local_data_root={os.path.join(scratch, 'cache')}"]
    model = [f"--backbone={args.backbone}", f"--input_size={args.input_size}",
             f"--max_epochs={args.epochs}", f"--batch_size={args.batch_size}",
             f"--seed={seed}", *common, *args.extra.split()]
    found = {}

    def evaluate(package_url, out):
        run(["--mode=eval", f"--eval_model={package_url}", f"--test_data_url={test}",
             f"--train_url={out}", *common], f"eval of {package_url}")
        return held_out_of(out)

    single = os.path.join(scratch, f"single-{seed}")
    seconds = run([*data, f"--train_url={single}", *model], f"seed {seed}")
    found["one model"] = (evaluate(single, single + "-test"), seconds)

    kfold = os.path.join(scratch, f"kfold-{seed}")
    seconds = run([*data, f"--train_url={kfold}", f"--kfold={args.kfold}", *model],
                  f"k-fold seed {seed}")
    folds = [os.path.join(kfold, "folds", str(i)) for i in range(args.kfold)]
    found[f"{args.kfold}-fold mean of {args.kfold}"] = (
        mean_of_folds(folds, test, os.path.join(scratch, "cache")), seconds)
    with open(os.path.join(kfold, "metrics.json")) as f:
        per_fold = [fold["top1_accuracy"] for fold in json.load(f)["folds"]]
    best = [folds[i] for i in sorted(range(args.kfold), key=lambda i: -per_fold[i])[:3]]
    for tta in ("none", "flip"):
        out = os.path.join(scratch, f"best3-{seed}-{tta}")
        run(["--mode=ensemble", f"--members={','.join(best)}", f"--tta={tta}",
             f"--test_data_url={test}", f"--train_url={out}", *common], "ensemble")
        found[f"best 3 folds, tta {tta}"] = (held_out_of(out), seconds)

    distilled = os.path.join(scratch, f"distilled-{seed}")
    seconds_distilled = run([*data, f"--train_url={distilled}", f"--distill_from={kfold}",
                             f"--distill_weight={args.distill_weight}", *model],
                            f"distilled seed {seed}")
    found["distilled"] = (evaluate(distilled, distilled + "-test"),
                          seconds + seconds_distilled)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder holding train/ and test/")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kfold", type=int, default=5)
    parser.add_argument("--distill_weight", type=float, default=0.5)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--extra", default="", help="train.py flags added to every model")
    parser.add_argument("--name", default="kfold", help="bench/results/<name>.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            for row, (score, seconds) in one_seed(seed, args, scratch).items():
                results.setdefault(row, []).append((score, seconds))
                print(f"seed {seed}, {row}: held-out top-1 {score:.3f} ({seconds:.0f} s "
                      "training)", flush=True)
    rows = []
    for row, found in results.items():
        scores = [score for score, _ in found]
        rows.append({"models": row, "held_out_top1": mean_sd(scores),
                     "scores": " ".join(f"{s:.3f}" for s in scores),
                     "train_s": f"{statistics.mean(s for _, s in found):.0f}"})
    report(args.name, rows, ["models", "held_out_top1", "scores", "train_s"],
           {"backbone": args.backbone, "input_size": args.input_size, "epochs": args.epochs,
            "batch_size": args.batch_size, "kfold": args.kfold, "seeds": seeds,
            "distill_weight": args.distill_weight, "data": args.data, "extra": args.extra})


if __name__ == "__main__":
    main()
