"""Retrieval on classes the model never trained on, side by side: each row (a set of train.py
flags) trains on the seen classes, then `retrieve.py index` embeds the unseen classes' gallery
and `retrieve.py search` their queries; top-1 and mAP@10 mean +- sd over seeds, beside a
raw-pixel embedding with no learning (an 8x8 grey thumbnail and a colour histogram), the
baseline issue 17 measured.

    python bench/retrieval_transfer.py --data=digits --unseen=7,8,9 --rows=default,gem_neck
    python ../shared/devdata/make_photo_set.py /tmp/photos --layout folders
    python bench/retrieval_transfer.py --data=/tmp/photos/train --unseen=aero,ascent

--data is `digits` (the bundled 8x8 digits, one folder per digit) or a folder of class folders.
The unseen classes' images alternate between gallery and queries (sorted by name).
"""
import argparse
import json
import os
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import mean_sd, report, run_script  # noqa: E402

ROWS = {
    "default": [],
    "gem": ["--pooling=gem"],
    "neck": ["--embedding_dim=128"],
    "gem_neck": ["--pooling=gem", "--embedding_dim=128"],
    "arcface": ["--head=arcface", "--head_scale=16"],
    "arcface_gem_neck": ["--head=arcface", "--head_scale=16", "--pooling=gem",
                         "--embedding_dim=128"],
    "subcenter_gem_neck": ["--head=subcenter_arcface", "--head_scale=16", "--pooling=gem",
                           "--embedding_dim=128"],
    "pk": ["--sampler=pk", "--pk_images=8"],
    "subcenter_gem_neck_pk": ["--head=subcenter_arcface", "--head_scale=16", "--pooling=gem",
                              "--embedding_dim=128", "--sampler=pk", "--pk_images=8"],
}
NO_TTA = ["--embed_tta=none"]
SEARCHES = {  # (retrieve.py index flags, search flags), each tried on every trained row
    "plain": (NO_TTA, []),
    "kreciprocal": (NO_TTA, ["--rerank=kreciprocal"]),
    "qe_dba": (NO_TTA, ["--query_expansion=5", "--database_augmentation=5"]),
    "whiten": (NO_TTA + ["--whiten=true"], []),
    "whiten_full": (NO_TTA + ["--whiten=true", "--whiten_power=1"], []),
    "whiten_kreciprocal": (NO_TTA + ["--whiten=true"], ["--rerank=kreciprocal"]),
    "flip": (["--embed_tta=flip"], []),
    "flip_kreciprocal": (["--embed_tta=flip"], ["--rerank=kreciprocal"]),
    "flip_whiten": (["--embed_tta=flip", "--whiten=true"], []),
    "multiscale": (["--embed_tta=multiscale"], []),
}


def write_digits(folder, size=32):
    """The bundled digits as one folder per digit (PNG)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        os.makedirs(os.path.join(folder, str(label)), exist_ok=True)
        image = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8))
        image.resize((size, size), Image.BILINEAR).save(os.path.join(folder, str(label),
                                                                     f"{i}.png"))
    return folder


def split_by_class(data, unseen, scratch):
    """train/ (seen classes), gallery/ and queries/ (unseen, alternating), as symlinks."""
    for name in sorted(os.listdir(data)):
        source = os.path.join(data, name)
        if not os.path.isdir(source):
            continue
        for i, file in enumerate(sorted(os.listdir(source))):
            side = "train" if name not in unseen else ("gallery" if i % 2 == 0 else "queries")
            os.makedirs(os.path.join(scratch, side, name), exist_ok=True)
            os.symlink(os.path.join(source, file), os.path.join(scratch, side, name, file))
    missing = set(unseen) - set(os.listdir(os.path.join(scratch, "gallery")))
    if missing:
        raise SystemExit(f"--unseen names classes {data} lacks: {sorted(missing)}")


def raw_pixels(folder):
    """(features, labels) of the raw-pixel baseline: 8x8 grey thumbnail + 8-bin RGB histogram."""
    features, labels = [], []
    for label, name in enumerate(sorted(os.listdir(folder))):
        for file in sorted(os.listdir(os.path.join(folder, name))):
            image = Image.open(os.path.join(folder, name, file)).convert("RGB")
            thumb = np.asarray(image.convert("L").resize((8, 8), Image.BILINEAR), np.float32)
            thumb = (thumb - thumb.mean()).ravel()
            rgb = np.asarray(image, np.float32).reshape(-1, 3)
            hist = np.concatenate([np.histogram(rgb[:, c], 8, (0, 256))[0] for c in range(3)])
            features.append(np.concatenate([thumb / (np.linalg.norm(thumb) + 1e-6),
                                            hist / (np.linalg.norm(hist) + 1e-6)]))
            labels.append(label)
    return np.array(features, np.float32), np.array(labels)


def baseline_scores(scratch):
    from retrieval import metrics, search

    gallery, gallery_labels = raw_pixels(os.path.join(scratch, "gallery"))
    queries, query_labels = raw_pixels(os.path.join(scratch, "queries"))
    _, ranked = search.exact_search(search.l2_normalise(queries), search.l2_normalise(gallery),
                                    10)
    return metrics.retrieval_scores(query_labels, gallery_labels[ranked], gallery_labels, k=10)


def run_row(name, flags, seed, args, scratch):
    """Train one row with one seed, index the unseen gallery (once per distinct set of index
    flags), search the unseen queries once per --searches entry: {search name: metrics}."""
    out = os.path.join(scratch, f"{name}-{seed}")
    cache = f"--local_data_root={os.path.join(scratch, 'cache')}"
    hows = args.searches.split(",")
    bases = {}  # index flags -> the base they make
    for how in hows:
        bases.setdefault(tuple(SEARCHES[how][0]), f"{out}/gallery{len(bases)}.h5")
    steps = [
        ["train.py", f"--data_url={scratch}/train", f"--train_url={out}",
         f"--backbone={args.backbone}", f"--input_size={args.input_size}",
         f"--max_epochs={args.epochs}", f"--batch_size={args.batch_size}", f"--seed={seed}",
         cache, *args.extra.split(), *flags],
    ] + [["retrieve.py", "index", f"--model_dir={out}", f"--data_url={scratch}/gallery",
          f"--index_url={path}", cache, *index_flags] for index_flags, path in bases.items()
         ] + [["retrieve.py", "search", f"--model_dir={out}", f"--data_url={scratch}/queries",
               f"--index_url={bases[tuple(SEARCHES[how][0])]}", f"--output_url={out}/found-{how}",
               cache, *SEARCHES[how][1]] for how in hows]
    for step in steps:
        run_script(step, f"{name} seed {seed}: {' '.join(step[:2])}")
    found = {}
    for how in args.searches.split(","):
        with open(os.path.join(out, f"found-{how}", "metrics.json")) as f:
            found[how] = json.load(f)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", help="digits, or a folder of class folders")
    parser.add_argument("--unseen", default="7,8,9", help="the classes kept out of training")
    parser.add_argument("--rows", default="default,gem_neck", help=f"of {', '.join(ROWS)}")
    parser.add_argument("--searches", default="plain,flip", help=f"of {', '.join(SEARCHES)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--extra", default="", help="train.py flags added to every row")
    parser.add_argument("--name", default="retrieval_transfer", help="bench/results/<name>.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        data = write_digits(os.path.join(scratch, "digits")) if args.data == "digits" \
            else args.data
        split_by_class(data, args.unseen.split(","), scratch)
        base = baseline_scores(scratch)
        rows = [{"row": "raw pixels", "search": "plain", "top1": f"{base['top1_accuracy']:.3f}",
                 "map_at_10": f"{base['map_at_10']:.3f}", "flags": "(no learning)"}]
        print(f"raw pixels: top-1 {base['top1_accuracy']:.3f}, mAP@10 {base['map_at_10']:.3f}",
              flush=True)
        for name in args.rows.split(","):
            found = [run_row(name, ROWS[name], seed, args, scratch) for seed in seeds]
            for how in args.searches.split(","):
                top1 = [f[how]["top1_accuracy"] for f in found]
                maps = [f[how]["map_at_10"] for f in found]
                print(f"{name}, {how} search: top-1 {mean_sd(top1)}, mAP@10 {mean_sd(maps)}",
                      flush=True)
                rows.append({"row": name, "search": how, "top1": mean_sd(top1),
                             "map_at_10": mean_sd(maps),
                             "scores": " ".join(f"{t:.2f}/{m:.2f}" for t, m in zip(top1, maps)),
                             "flags": " ".join(ROWS[name] + SEARCHES[how][0] + SEARCHES[how][1])
                             or "(defaults)"})
    report(args.name, rows, ["row", "search", "top1", "map_at_10", "scores", "flags"],
           {"backbone": args.backbone, "input_size": args.input_size, "epochs": args.epochs,
            "batch_size": args.batch_size, "seeds": seeds, "data": args.data,
            "unseen": args.unseen, "extra": args.extra, "searches": args.searches})


if __name__ == "__main__":
    main()
