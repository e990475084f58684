"""Input pipeline throughput on ~2,000 photo-sized JPEGs (500x375), in one run:
our tf.data training pipeline (standard augmentation, oversampling, 224 px) against the seeds'
Keras ImageDataGenerator with equivalent augmentation, and against PIL decode-only on all cores
(the decode limit: no resize, no augmentation).

    python bench/input_pipeline.py [--images 2000] [--size 224] [--repeats 5]
                                   [--presets=randaugment,augmix]

Goal: >= 5x ImageDataGenerator and >= 0.8x the decode limit. --presets adds a row per other
--augment preset, with its throughput against standard's (what RandAugment or AugMix cost).
"""
import argparse
import os
import sys
import tempfile
from multiprocessing import Pool

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import interleaved_median_seconds, report  # noqa: E402

CLASSES = 10
PIPELINE_PASSES = 3


def make_photos(folder, count):
    """Photo-sized JPEGs (500x375) in class folders: upscaled digits under smooth colour noise,
    so the files have a photo's size and entropy. Reused if already there."""
    from tests.images import digit_image

    rng = np.random.default_rng(0)
    done = sum(len(files) for _, _, files in os.walk(folder))
    if done >= count:
        return folder
    for i in range(count):
        digit, label = digit_image(i, 64)
        base = np.asarray(digit.resize((500, 375), Image.BILINEAR), dtype=np.float32)
        noise = rng.normal(0, 1, (24, 32, 3)).astype(np.float32)
        noise = np.asarray(Image.fromarray(((noise + 3) * 40).clip(0, 255).astype(np.uint8))
                           .resize((500, 375), Image.BICUBIC), dtype=np.float32)
        pixels = (0.6 * base + 0.4 * noise + rng.normal(0, 6, base.shape)).clip(0, 255)
        path = os.path.join(folder, f"class_{label}", f"photo_{i}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    return folder


def _pil_decode(path):
    with Image.open(path) as image:
        return image.convert("RGB").size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", default="", help="more --augment presets to time, "
                        "comma-separated (e.g. randaugment,augmix)")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(),
                                                         "bench_photos_500x375"))
    args = parser.parse_args()

    import tensorflow as tf

    from inputs import augment, layouts, pipeline

    folder = make_photos(args.folder, args.images)
    samples = layouts.read_index(folder, "folders").samples[: args.images]
    paths = [s.path for s in samples]
    batches = max(1, len(samples) // args.batch_size)
    images = batches * args.batch_size

    def pipeline_run(preset):
        """(prime, run) for our training pipeline with `preset`: prime empties the prefetch
        buffer that filled while other contenders ran, run draws the images PIPELINE_PASSES
        times over (a run of one second is at the mercy of tf.data's autotuner warming up)."""
        ds = pipeline.train_dataset(samples, CLASSES, args.batch_size, args.size, "letterbox",
                                    "oversample", augment.resolve(preset), seed=0)
        it = iter(ds)

        def draw(count):
            for _ in range(count):
                next(it)
        return lambda: draw(16), lambda: draw(PIPELINE_PASSES * batches)

    idg = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=15, zoom_range=0.15, width_shift_range=0.1, height_shift_range=0.1,
        horizontal_flip=True, brightness_range=(0.8, 1.2), channel_shift_range=0.0)
    flow = idg.flow_from_directory(folder, target_size=(args.size, args.size),
                                   batch_size=args.batch_size, class_mode="categorical",
                                   seed=0)

    def seeds():
        for _ in range(batches):
            next(flow)

    pool = Pool(os.cpu_count())
    pool.map(_pil_decode, paths[:64])

    def decode_limit():
        pool.map(_pil_decode, paths[:images], chunksize=16)

    contenders = {"ours: tf.data, standard augment": pipeline_run("standard"),
                  "ours: tf.data, no augmentation": pipeline_run("none"),
                  "seeds: ImageDataGenerator": seeds,
                  "PIL decode only, all cores": decode_limit}
    extra = [p for p in args.presets.split(",") if p]
    for preset in extra:
        contenders[f"ours: tf.data, {preset}"] = pipeline_run(preset)
    timed = interleaved_median_seconds(contenders, args.repeats)
    pool.close()
    counts = {name: images * (PIPELINE_PASSES if name.startswith("ours") else 1)
              for name in contenders}
    rows = [{"pipeline": name, "images/s": round(counts[name] / seconds, 1), "runs_s": runs}
            for name, (seconds, runs) in timed.items()]
    ours_rate = rows[0]["images/s"]
    rows[0]["vs ImageDataGenerator"] = round(ours_rate / rows[2]["images/s"], 2)
    rows[0]["vs decode limit"] = round(ours_rate / rows[3]["images/s"], 2)
    for row in rows[4:]:
        row["vs standard"] = round(row["images/s"] / ours_rate, 2)
    report("input_pipeline", rows,
           ["pipeline", "images/s", "vs ImageDataGenerator", "vs decode limit", "vs standard"],
           {"images": images, "input_size": args.size, "source": "500x375 JPEG"})


if __name__ == "__main__":
    main()
