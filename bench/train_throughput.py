"""Training throughput of the custom loop against a plain model.fit of the same model, one
device, in one run: ResNet50 at 224 and 64 px, batch 32, on synthetic in-memory batches (the
input pipeline has its own benchmark). On a GPU, mixed precision and XLA are added.

    python bench/train_throughput.py [--sizes 224,64] [--steps 40] [--repeats 3]
                                     [--steps_per_execution 1,4]

Ours runs as an epoch does (training.loop.run_steps: the sums read every 20 steps), once per
--steps_per_execution value.

Goal: our loop >= 0.95x model.fit on one device.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import report  # noqa: E402


def variants(gpu):
    plain = [("fp32", False, False)]
    return plain + ([("mixed", True, False), ("mixed+xla", True, True)] if gpu else [])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,64")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--steps_per_execution", default="1,4",
                        help="comma-separated values tried for our loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone", default="resnet50")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from models import build, losses
    from training.loop import Loop, StepConfig, run_steps

    gpu = bool(tf.config.list_physical_devices("GPU"))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for name, mixed, xla in variants(gpu):
            keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
            rng = np.random.default_rng(0)
            images = rng.uniform(0, 255, (args.batch_size, size, size, 3)).astype("float32")
            labels = np.eye(10, dtype="float32")[rng.integers(0, 10, args.batch_size)]
            data = tf.data.Dataset.from_tensors((images, labels)).repeat()

            model, _ = build.build_classifier(args.backbone, 10, size)
            optimizer = keras.optimizers.Adam(1e-4)
            if mixed:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
            iterator = iter(data)

            def ours_with(per_call):
                loop = Loop(tf.distribute.get_strategy(), model, optimizer,
                            losses.make_loss(reduction=None),
                            StepConfig(args.batch_size, jit_compile=xla,
                                       steps_per_execution=per_call))
                return lambda: run_steps(loop, iterator, args.steps)  # reads the last sums

            fit_model, _ = build.build_classifier(args.backbone, 10, size)
            fit_model.compile(optimizer=keras.optimizers.Adam(1e-4),
                              loss=keras.losses.CategoricalCrossentropy(), jit_compile=xla)

            def fit():
                fit_model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)

            timings = {}
            contenders = [(f"ours x{k}", ours_with(int(k)))
                          for k in args.steps_per_execution.split(",")] + [("fit", fit)]
            for label, fn in contenders:
                fn()  # compile and warm up
                runs = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    fn()
                    runs.append(time.perf_counter() - start)
                timings[label] = (float(np.median(runs)), runs)
            images_per_run = args.steps * args.batch_size
            for label, (seconds, _) in timings.items():
                if label == "fit":
                    continue
                rows.append({"size": size, "precision": name, "loop": label,
                             "ours img/s": round(images_per_run / seconds, 1),
                             "model.fit img/s": round(images_per_run / timings["fit"][0], 1),
                             "ratio": round(timings["fit"][0] / seconds, 3),
                             "runs_s": {k: v[1] for k, v in timings.items()}})
                print(rows[-1])
    report("train_throughput", rows, ["size", "precision", "loop", "ours img/s",
                                      "model.fit img/s", "ratio"],
           {"backbone": args.backbone, "batch_size": args.batch_size, "steps": args.steps,
            "device": "GPU" if gpu else "CPU"})


if __name__ == "__main__":
    main()
