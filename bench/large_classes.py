"""train.py with many classes on this machine: a synthetic set of --classes classes, each of
--per_class tiny distinct images (a class is a colour pattern; its images are noisy copies),
trained for --epochs, evaluated on its validation split, exported, and served (the package's
predictor loaded and asked about one image). Prints each step's wall time and peak memory
(RSS), and the sizes a user sees: metrics.json, config.json, labels.json, the SavedModel and
one reply.

    python bench/large_classes.py --classes=5000 --per_class=3
    python bench/large_classes.py --classes=50000 --per_class=2 --batch_size=128
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVE = """
import io, json, sys, time
sys.path.insert(0, {root!r})
import customize_service
started = time.time()
service = customize_service.ImageClassifierService("model", {model!r})
service.wait_ready(600)
loaded = time.time() - started
image = open({image!r}, "rb").read()
started = time.time()
for _ in range(5):
    reply = service.inference({{"images": {{"x.png": io.BytesIO(image)}}}})
print(json.dumps({{"load_s": loaded, "reply_ms": (time.time() - started) / 5 * 1000,
                  "reply_bytes": len(json.dumps(reply, ensure_ascii=False)),
                  "scores": len(reply["scores"])}}))
"""


def make_set(folder, classes, per_class, size=16):
    """`classes` folders of `per_class` PNGs: a class is a random 4x4 colour pattern
    upscaled, each image it plus its own noise (so screening keeps every one)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        pattern = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
        base = np.kron(pattern, np.ones((size // 4, size // 4, 1), np.float32))
        os.makedirs(os.path.join(folder, f"p{c:05d}"), exist_ok=True)
        for i in range(per_class):
            noisy = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(os.path.join(folder, f"p{c:05d}", f"{i}.png"))


def timed(command, env=None):
    """(seconds, peak RSS in MiB, stdout) of a command run under /usr/bin/time."""
    started = time.time()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *command], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    return time.time() - started, peak_kib / 1024, proc.stdout


def size_of(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=5000)
    parser.add_argument("--per_class", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--backbone", default="mobilenetv3small")
    parser.add_argument("--extra", default="", help="more train.py flags")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        data, out = os.path.join(scratch, "data"), os.path.join(scratch, "out")
        started = time.time()
        make_set(data, args.classes, args.per_class)
        rows.append({"step": f"make {args.classes} x {args.per_class} images",
                     "s": f"{time.time() - started:.0f}"})
        seconds, peak, _ = timed([sys.executable, "train.py", f"--data_url={data}",
                                    f"--train_url={out}", f"--backbone={args.backbone}",
                                    "--input_size=32", f"--batch_size={args.batch_size}",
                                    f"--max_epochs={args.epochs}", "--val_ratio=0.34",
                                    f"--local_data_root={os.path.join(scratch, 'cache')}",
                                    *args.extra.split()])
        with open(os.path.join(out, "evaluation", "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        rows.append({"step": "train.py: screen, train, evaluate, export, check",
                     "s": f"{seconds:.0f}", "peak_MiB": f"{peak:.0f}",
                     "note": f"validation top-1 {metrics['top1_accuracy']:.3f}, "
                             f"GAP {metrics['gap']:.3f} on {metrics['images']} images"})
        for name in ("metrics.json", "per_class.csv", "confused_pairs.csv",
                     "confusion_matrix.png"):
            rows.append({"step": f"evaluation/{name}", "bytes": size_of(
                os.path.join(out, "evaluation", name))})
        for name in ("config.json", "labels.json", "saved_model.pb", "variables"):
            rows.append({"step": f"model/{name}", "bytes": size_of(os.path.join(out, "model",
                                                                                 name))})
        image = os.path.join(data, "p00000", "0.png")
        seconds, peak, printed = timed([sys.executable, "-c", SERVE.format(
            root=ROOT, model=os.path.join(out, "model"), image=image)])
        served = json.loads(printed.strip().splitlines()[-1])
        rows.append({"step": "serve: load the package, answer one image", "s": f"{seconds:.0f}",
                     "peak_MiB": f"{peak:.0f}",
                     "note": f"load {served['load_s']:.1f} s, a reply {served['reply_ms']:.0f} "
                             f"ms, {served['reply_bytes']} bytes ({served['scores']} scores)"})
    report(f"large_classes_{args.classes}", rows, ["step", "s", "peak_MiB", "bytes", "note"],
           {"classes": args.classes, "per_class": args.per_class, "epochs": args.epochs,
            "backbone": args.backbone, "batch_size": args.batch_size})


if __name__ == "__main__":
    main()
