"""Label cleaning measured: a tenth of the training labels flipped to another class (seeded),
then `train.py --mode=clean` by each rule finds them or not, and models trained on the cleaned
labels are scored against models trained on the noisy ones, on held-out images.

    python ../shared/devdata/make_photo_set.py /tmp/photos --layout folders
    python bench/label_cleaning.py --set=photos --data=/tmp/photos --seeds=0,1
    python bench/label_cleaning.py --set=digits --seeds=0,1

Per seed: a model trained on the noisy labels (the confidence rule then runs on its own
predictions of its training images, as the AliProducts seed did) and a --kfold=3 run on them
(cleanlab's find_label_issues on its out-of-fold probabilities; the confidence rule on them too).
Each rule's precision and recall at finding the flipped images, and the held-out top-1 of a
model trained on what it kept. The photo set's test crops come from regions training never saw;
the digits' test images are every fourth scan, never trained on.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import mean_sd, report, run_script  # noqa: E402

# What each set trains with: the recipes bench's for the photos, the demo's for the digits.
SETTINGS = {
    "photos": ["--backbone=resnet50", "--input_size=32", "--max_epochs=15", "--batch_size=32"],
    "digits": ["--backbone=mobilenetv3small", "--input_size=32", "--max_epochs=8",
               "--batch_size=32", "--learning_rate=2e-3", "--freeze_epochs=0", "--flip=none",
               "--augment=light"],
}
NOISY, TEST = "noisy.csv", "test.csv"


def write_manifest(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])


def photo_rows(folder):
    """(path, class) of every image of a folders-layout set."""
    return sorted((f"{c}/{name}", c) for c in os.listdir(folder)
                  if os.path.isdir(os.path.join(folder, c))
                  for name in os.listdir(os.path.join(folder, c)))


def prepare(args, scratch):
    """(train folder, test folder, clean training rows): the training images copied into
    scratch (their manifests go beside them); the digits' test folder with a manifest (their
    class names hold '/')."""
    train, test = os.path.join(scratch, "train"), os.path.join(scratch, "test")
    if args.set == "photos":
        shutil.copytree(os.path.join(args.data, "train"), train)
        return train, os.path.join(args.data, "test"), photo_rows(train)
    from inputs import demo

    every = os.path.join(scratch, "digits")
    demo.write_digits(every)
    names = json.load(open(os.path.join(every, "garbage_classify_rule.json"), encoding="utf-8"))
    rows = {"train": [], "test": []}
    for name in sorted(os.listdir(every)):
        if not name.endswith(".txt"):
            continue
        image, label = open(os.path.join(every, name), encoding="utf-8").read().split(",")
        part = "test" if int(image.strip()[4:-4]) % 4 == 0 else "train"
        os.makedirs(os.path.join(scratch, part), exist_ok=True)
        shutil.copy(os.path.join(every, image.strip()), os.path.join(scratch, part))
        rows[part].append((image.strip(), names[label.strip()]))
    write_manifest(os.path.join(test, TEST), rows["test"])
    return train, test, rows["train"]


def flip(rows, share, seed):
    """`rows` with `share` of their labels moved to another class; (rows, flipped paths)."""
    rng = np.random.default_rng(seed)
    classes = sorted({label for _, label in rows})
    chosen = set(rng.choice(len(rows), int(round(share * len(rows))), replace=False).tolist())
    noisy = []
    for i, (path, label) in enumerate(rows):
        if i in chosen:
            others = [c for c in classes if c != label]
            label = others[rng.integers(len(others))]
        noisy.append((path, label))
    return noisy, {rows[i][0] for i in chosen}


def train(name, data, manifest, out, seed, args, scratch, extra=()):
    run_script(["train.py", f"--data_url={data}", f"--manifest={manifest}",
                "--data_format=manifest", f"--train_url={out}", f"--seed={seed}",
                f"--local_data_root={os.path.join(scratch, 'cache')}", *SETTINGS[args.set],
                *extra], name)


def held_out(name, out, test, scratch):
    """Top-1 of the package of run `out` on the test folder."""
    run_script(["train.py", "--mode=eval", f"--eval_model={out}/model",
                f"--test_data_url={test}", f"--train_url={out}-test",
                f"--local_data_root={os.path.join(scratch, 'cache')}"], f"{name} eval")
    with open(os.path.join(f"{out}-test", "evaluation", "metrics.json")) as f:
        return json.load(f)["top1_accuracy"]


def clean(name, data, model, rule, out, scratch):
    """(flagged paths, cleaned manifest) of train.py --mode=clean with `rule` on `model`."""
    run_script(["train.py", "--mode=clean", f"--eval_model={model}", f"--data_url={data}",
                f"--manifest={NOISY}", "--data_format=manifest", f"--clean_rule={rule}",
                f"--train_url={out}", f"--local_data_root={os.path.join(scratch, 'cache')}"],
               f"{name} clean")
    with open(os.path.join(out, "label_issues.csv"), encoding="utf-8") as f:
        flagged = {row["file"] for row in csv.DictReader(f)}
    return flagged, os.path.join(out, "cleaned_manifest.csv")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETTINGS), default="photos")
    parser.add_argument("--data", help="--set=photos: a folder holding train/ and test/")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--share", type=float, default=0.1, help="labels flipped")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    found = {}  # row name -> {"precision": [], "recall": [], "flagged": [], "top1": []}

    def record(row, **values):
        for key, value in values.items():
            found.setdefault(row, {}).setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory() as scratch:
        data, test, rows = prepare(args, scratch)
        for seed in seeds:
            noisy, flipped = flip(rows, args.share, seed)
            write_manifest(os.path.join(data, NOISY), noisy)
            base = os.path.join(scratch, f"seed{seed}")
            runs = {"noisy": f"{base}-noisy", "kfold": f"{base}-kfold"}
            train(f"noisy seed {seed}", data, NOISY, runs["noisy"], seed, args, scratch)
            record("noisy labels", top1=held_out("noisy", runs["noisy"], test, scratch))
            train(f"kfold seed {seed}", data, NOISY, runs["kfold"], seed, args, scratch,
                  ["--kfold=3", "--export_model=false"])
            for row, model, rule, retrain in (
                    ("confidence (own predictions)", runs["noisy"], "confidence", True),
                    ("cleanlab (out-of-fold)", runs["kfold"], "cleanlab", True),
                    ("confidence (out-of-fold)", runs["kfold"], "confidence", False)):
                tag = row.split()[0] + ("_oof" if "out-of-fold" in row else "")
                flagged, manifest = clean(row, data, model, rule, f"{base}-clean-{tag}",
                                          scratch)
                hits = len(flagged & flipped)
                values = {"flagged": len(flagged), "recall": hits / len(flipped),
                          "precision": hits / len(flagged) if flagged else 0.0}
                if retrain:
                    kept = f"cleaned_{tag}.csv"
                    shutil.copy(manifest, os.path.join(data, kept))
                    out = f"{base}-cleaned-{tag}"
                    train(f"{row} seed {seed}", data, kept, out, seed, args, scratch)
                    values["top1"] = held_out(row, out, test, scratch)
                record(row, **values)
                print(f"seed {seed} {row}: {values}", flush=True)
            print(f"seed {seed} noisy: top-1 {found['noisy labels']['top1'][-1]:.3f} "
                  f"({len(flipped)} of {len(rows)} labels flipped)", flush=True)
    table = []
    for row, values in found.items():
        table.append({"labels": row,
                      "flagged": f"{statistics.mean(values['flagged']):.0f}"
                      if "flagged" in values else "",
                      "precision": mean_sd(values["precision"]) if "precision" in values else "",
                      "recall": mean_sd(values["recall"]) if "recall" in values else "",
                      "held_out_top1": mean_sd(values["top1"]) if "top1" in values else "",
                      "scores": " ".join(f"{s:.3f}" for s in values.get("top1", []))})
    report(f"label_cleaning_{args.set}", table,
           ["labels", "flagged", "precision", "recall", "held_out_top1", "scores"],
           {"set": args.set, "seeds": seeds, "share": args.share, "images": len(rows),
            "settings": SETTINGS[args.set]})


if __name__ == "__main__":
    main()
