"""What test-time views and ensembles buy on held-out data: one model per seed (train.py's
defaults unless --extra says otherwise) trained on the train split of a set built by
../shared/devdata/make_photo_set.py, then each model alone and the ensemble of all of them (up
to three: seeds 0-2, 3-5, ...), each with --tta=none, flip and crops, packaged by `train.py --mode=ensemble` and
scored on the test split through the package's own serving signature (crops of regions of
the photos that training never saw). Prints held-out top-1 (mean +- sd over the seeds for
single models) and the training wall time.

    python ../shared/devdata/make_photo_set.py /tmp/photos --layout folders
    python bench/ensembles.py --data=/tmp/photos --seeds=0,1,2,3,4,5 --extra=--xla=true
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
VIEWS = ("none", "flip", "crops")


def held_out(members, tta, args, scratch, common):
    """Held-out top-1 of the package of `members` with `tta` views."""
    out = os.path.join(scratch, f"ens-{len(os.listdir(scratch))}")
    run_script(["train.py", "--mode=ensemble", f"--members={','.join(members)}",
                f"--tta={tta}", f"--test_data_url={os.path.join(args.data, 'test')}",
                f"--train_url={out}", *common], f"ensemble of {members} with {tta}")
    with open(os.path.join(out, "evaluation", "metrics.json")) as f:
        return json.load(f)["top1_accuracy"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder holding train/ and test/")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--extra", default="", help="train.py flags added to every model")
    parser.add_argument("--name", default="ensembles", help="bench/results/<name>.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        common = [f"--local_data_root={os.path.join(scratch, 'cache')}"]
        runs, times = [], []
        for seed in seeds:
            out = os.path.join(scratch, f"seed-{seed}")
            _, seconds = run_script(
                ["train.py", f"--data_url={os.path.join(args.data, 'train')}",
                 f"--train_url={out}", f"--backbone={args.backbone}",
                 f"--input_size={args.input_size}", f"--max_epochs={args.epochs}",
                 f"--batch_size={args.batch_size}", f"--seed={seed}", *common,
                 *args.extra.split()], f"seed {seed}")
            times.append(seconds)
            runs.append(out)
            print(f"seed {seed} trained in {times[-1]:.0f} s", flush=True)
        scratch_ens = os.path.join(scratch, "ensembles")
        os.makedirs(scratch_ens)
        for tta in VIEWS:
            single = [held_out([out], tta, args, scratch_ens, common) for out in runs]
            print(f"one model, tta {tta}: {' '.join(f'{s:.3f}' for s in single)}", flush=True)
            rows.append({"models": "one", "tta": tta, "held_out_top1": mean_sd(single),
                         "scores": " ".join(f"{s:.3f}" for s in single),
                         "train_s": f"{statistics.mean(times):.0f}"})
        groups = [runs[i:i + 3] for i in range(0, len(runs), 3)]  # seeds 0-2, 3-5, ...
        for tta in VIEWS:
            scores = [held_out(group, tta, args, scratch_ens, common) for group in groups]
            print(f"ensembles of {[len(g) for g in groups]}, tta {tta}: "
                  f"{' '.join(f'{s:.3f}' for s in scores)}", flush=True)
            rows.append({"models": f"ensemble of {len(groups[0])}", "tta": tta,
                         "held_out_top1": mean_sd(scores),
                         "scores": " ".join(f"{s:.3f}" for s in scores),
                         "train_s": f"{statistics.mean(times) * len(groups[0]):.0f}"})
    report(args.name, rows, ["models", "tta", "held_out_top1", "scores", "train_s"],
           {"backbone": args.backbone, "input_size": args.input_size, "epochs": args.epochs,
            "batch_size": args.batch_size, "seeds": seeds, "data": args.data,
            "extra": args.extra})


if __name__ == "__main__":
    main()
