"""Auxiliary heads on coarser label levels (--label_levels_sep, --level_weights) against none,
on the digits with two real hierarchies: odd against even (the demo's own names, "偶数/零") and
below 5 against 5 and above. Trained on three of every four scans, scored by `train.py
--mode=eval --label_levels_sep=/` on the fourth: held-out top-1 of the digits and of the level.

    python bench/levels.py --seeds=0,1 --weights=0.5
"""
import argparse
import json
import os
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import mean_sd, report, run_script  # noqa: E402
from bench.label_cleaning import SETTINGS, prepare, write_manifest  # noqa: E402

GROUPINGS = {"odd_even": lambda digit: "奇数" if digit % 2 else "偶数",
             "below_5": lambda digit: "小" if digit < 5 else "大"}
DIGITS = "零一二三四五六七八九"


def renamed(name, grouping):
    """The demo's "偶数/三"-style name under `grouping`'s category."""
    item = name.split("/")[1]
    return f"{GROUPINGS[grouping](DIGITS.index(item))}/{item}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--weights", default="0.5", help="--level_weights values to compare")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        data, test, train_rows = prepare(argparse.Namespace(set="digits"), scratch)
        with open(os.path.join(test, "test.csv"), encoding="utf-8") as f:
            test_rows = [line.rstrip("\n").split(",") for line in f][1:]
        for grouping in GROUPINGS:
            write_manifest(os.path.join(data, f"{grouping}.csv"),
                           [(p, renamed(n, grouping)) for p, n in train_rows])
            test_dir = os.path.join(scratch, f"test_{grouping}")
            os.makedirs(test_dir)
            for path, _ in test_rows:
                os.link(os.path.join(test, path), os.path.join(test_dir, path))
            write_manifest(os.path.join(test_dir, "test.csv"),
                           [(p, renamed(n, grouping)) for p, n in test_rows])
            for weights in ["", *args.weights.split(",")]:
                fine, coarse = [], []
                for seed in seeds:
                    out = os.path.join(scratch, f"{grouping}-{weights or 'none'}-{seed}")
                    extra = [f"--level_weights={weights}"] if weights else []
                    run_script(["train.py", f"--data_url={data}", f"--manifest={grouping}.csv",
                                "--data_format=manifest", f"--train_url={out}", f"--seed={seed}",
                                "--label_levels_sep=/", *SETTINGS["digits"], *extra,
                                f"--local_data_root={os.path.join(scratch, 'cache')}"], out)
                    run_script(["train.py", "--mode=eval", f"--eval_model={out}/model",
                                f"--test_data_url={test_dir}", f"--train_url={out}-test",
                                "--label_levels_sep=/",
                                f"--local_data_root={os.path.join(scratch, 'cache')}"],
                               f"{out} eval")
                    with open(os.path.join(f"{out}-test", "evaluation", "metrics.json")) as f:
                        metrics = json.load(f)
                    fine.append(metrics["top1_accuracy"])
                    coarse.append(metrics["levels"][0]["top1_accuracy"])
                    print(f"{grouping} weights={weights or 'none'} seed {seed}: digits "
                          f"{fine[-1]:.4f}, level {coarse[-1]:.4f}", flush=True)
                rows.append({"grouping": grouping, "level_weights": weights or "(none)",
                             "held_out_top1": mean_sd(fine), "level_top1": mean_sd(coarse),
                             "scores": " ".join(f"{s:.3f}" for s in fine)})
    report("levels", rows, ["grouping", "level_weights", "held_out_top1", "level_top1",
                            "scores"],
           {"seeds": seeds, "settings": SETTINGS["digits"]})


if __name__ == "__main__":
    main()
