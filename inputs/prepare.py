"""The data stage of a job, start to end: read the layout, screen the images, report, fix the
label map and the split (reusing those a previous run of the same job saved). Returns what the
input pipelines need; writes screening_report.json, labels.json and split.json to the outputs."""
import logging
import os
from dataclasses import dataclass, replace

import obs_utils
from errors import UserError

from . import class_counts, label_map, layouts, screening, split

log = logging.getLogger("inputs")


@dataclass
class PreparedData:
    class_names: list
    train: list          # Samples
    val: list            # Samples
    report: dict         # the screening report of the training data
    folds: list = None   # --kfold: the fold of each train sample (val is then empty)
    soft: dict = None    # --distill_from: {file: out-of-fold probabilities} (inputs/oof.py)

    def fold(self, i):
        """Fold `i` of a --kfold run as data of its own: its images held out as validation."""
        train, val = split.fold_split(self.train, self.folds, i)
        return PreparedData(self.class_names, train, val, self.report, soft=self.soft)


def _screened(index, cache_root, max_pixels, min_side, report_url, write,
              drop_duplicates=True):
    """Screen the images of `index`, report (written to report_url when `write`); returns
    (usable samples, report)."""
    usable, problems = screening.screen(index, os.path.join(cache_root, "converted"),
                                        max_pixels, min_side, drop_duplicates=drop_duplicates)
    report = screening.summarize(index, usable, problems)
    if write:
        screening.write_report(report_url, report)
    screening.log_summary(report, report_url if write else None)
    return usable, report


def _same_classes(saved, found, where):
    if saved != found:
        added = [n for n in found if n not in saved]
        missing = [n for n in saved if n not in found]
        raise UserError(f"{where} holds another label map than this data ({len(saved)} classes "
                         f"saved, {len(found)} now; new: {added[:5]}, gone: {missing[:5]}); "
                         "use a new --train_url for new data")


def relabel(samples, names, class_names, where, flag="--val_data_url"):
    """Map another set's labels (ids into `names`) onto the model's ids, by class name."""
    ids = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({names[s.label] for s in samples} - set(ids))
    if unknown:
        raise UserError(f"{flag} {where} has classes the training data lacks (the model "
                         f"cannot predict them): {unknown[:10]}")
    return [replace(s, label=ids[names[s.label]]) for s in samples]


def without_copies_of(train, val, drop=True):
    """The training samples, less exact copies (same bytes) of validation images when `drop`:
    a copy on both sides makes validation accuracy a training accuracy. Logged either way."""
    held_out = {s.digest for s in val if s.digest}
    copies = [s for s in train if s.digest in held_out]
    if not copies:
        return train
    names = ", ".join(s.rel for s in copies[:5]) + (", ..." if len(copies) > 5 else "")
    if drop:
        log.warning("%d training images are exact copies of validation images (%s): left out "
                    "of training, so validation stays unseen (--drop_val_copies=false keeps "
                    "them)", len(copies), names)
        return [s for s in train if s.digest not in held_out]
    log.warning("%d training images are exact copies of validation images (%s), kept "
                "(--drop_val_copies=false): validation accuracy counts them as unseen",
                len(copies), names)
    return train


def prepare(data_dir, train_url, cache_root, layout="auto", manifest=None, val_dir=None,
            val_ratio=0.2, seed=0, max_pixels=screening.MAX_PIXELS,
            min_side=screening.MIN_SIDE, write=True, drop_val_copies=True, kfold=0,
            min_images_per_class=0, max_images_per_class=0, max_train_per_class=0):
    """Run the data stage on local folders. Outputs go under `train_url`, and a label map or
    split already there is reused; write=False (the other workers of a multi-node job) reads
    but writes nothing, and reaches the same result from the same data and seed. With an
    explicit `val_dir`, training images that are exact copies of validation ones are left out
    (`drop_val_copies`); a split of one folder has none (screening keeps one copy). With
    `kfold` > 1 every usable image is train, each with its fold (folds.json), and val is
    empty. The model's classes are those whose usable images number between
    `min_images_per_class` and `max_images_per_class` (class_counts.json lists the others);
    `max_train_per_class` caps each class's training images (saved in split.json)."""
    report_url = obs_utils.join(train_url, "screening_report.json")
    index = layouts.read_index(data_dir, layout, manifest)
    usable, report = _screened(index, cache_root, max_pixels, min_side, report_url, write)
    usable, class_names, left_out = class_counts.select_classes(
        usable, index.class_names, min_images_per_class, max_images_per_class)
    if min_images_per_class or max_images_per_class:
        counts_url = obs_utils.join(train_url, class_counts.FILE_NAME)
        if write:
            class_counts.write_report(counts_url, left_out, min_images_per_class,
                                      max_images_per_class, len(class_names))
        class_counts.log_left_out(left_out, len(class_names), counts_url if write else None)
    screening.check_enough(usable, class_names, report_url)

    labels_url = obs_utils.join(train_url, label_map.FILE_NAME)
    if obs_utils.exists(labels_url):
        _same_classes(label_map.load(labels_url), class_names, labels_url)
    elif write:
        label_map.save(labels_url, class_names)

    if kfold > 1:
        if val_dir:
            raise UserError("--kfold holds each fold out in turn as the validation set: "
                            "leave out --val_data_url (or --kfold)")
        if max_train_per_class:
            raise UserError("--max_train_per_class is not applied to --kfold runs (every image "
                            "is held out once): leave one of them out")
        folds = split.load_or_make_folds(obs_utils.join(train_url, split.FOLDS_FILE), usable,
                                         kfold, seed, write)
        return PreparedData(class_names, usable, [], report, folds)
    if val_dir:
        val_report_url = obs_utils.join(train_url, "screening_report_val.json")
        val_index = layouts.read_index(val_dir, layout, None)
        val_usable, _ = _screened(val_index, cache_root, max_pixels, min_side, val_report_url,
                                  write)
        val = relabel(val_usable, val_index.class_names, index.class_names, val_dir)
        val = class_counts.onto(val, index.class_names, class_names, val_dir)
        train = without_copies_of(usable, val, drop_val_copies)
        train, capped = class_counts.cap_per_class(train, max_train_per_class, seed)
        if not train:
            raise screening.DataError(f"every training image is also in {val_dir}: give "
                                      "--val_data_url images of its own")
        log.info("split: explicit validation set %s: %d images (%d train images%s)", val_dir,
                 len(val), len(train), f"; --max_train_per_class={max_train_per_class} left "
                 f"out {len(capped)}" if capped else "")
    else:
        train, val = split.load_or_make(obs_utils.join(train_url, split.FILE_NAME), usable,
                                        val_ratio, seed, write, max_train_per_class)
    if not val:
        raise screening.DataError(
            "no validation images: " + (f"none of {val_dir} is usable" if val_dir else
                                        "every class has a single image, so none can be held "
                                        "out") + "; add images or pass --val_data_url")
    return PreparedData(class_names, train, val, report)


def prepare_test(data_dir, class_names, report_url, cache_root, layout="auto", manifest=None,
                 max_pixels=screening.MAX_PIXELS, min_side=screening.MIN_SIDE):
    """A labelled test set (any layout), screened, with labels mapped onto the model's
    `class_names` by name; its screening report goes to `report_url`."""
    index = layouts.read_index(data_dir, layout, manifest)
    usable, _ = _screened(index, cache_root, max_pixels, min_side, report_url, write=True)
    if not usable:
        raise screening.DataError(f"no usable test images in {data_dir}; see {report_url}")
    return relabel(usable, index.class_names, class_names, data_dir, flag="--test_data_url")


def prepare_unlabelled(data_dir, report_url, cache_root, max_pixels=screening.MAX_PIXELS,
                       min_side=screening.MIN_SIDE):
    """Every image below `data_dir` (labels, if any, ignored), screened, in path order."""
    usable, _ = _screened(layouts.read_unlabelled(data_dir), cache_root, max_pixels, min_side,
                          report_url, write=True, drop_duplicates=False)
    if not usable:
        raise screening.DataError(f"no usable images in {data_dir}; see {report_url}")
    return usable


def prepare_images(data_dir, report_url, cache_root, layout="auto", manifest=None,
                   max_pixels=screening.MAX_PIXELS, min_side=screening.MIN_SIDE):
    """Every usable image below `data_dir`, screened, for retrieval: (samples, class names)
    when the folder is in a labelled layout, else (samples, None) with every image below it.
    --data_format=unlabelled ignores any labels."""
    if layout == "unlabelled":
        index = layouts.read_unlabelled(data_dir)
    else:
        try:
            index = layouts.read_index(data_dir, layout, manifest)
        except layouts.LayoutError:
            if layout != "auto":
                raise
            index = layouts.read_unlabelled(data_dir)  # a plain folder of images
    usable, _ = _screened(index, cache_root, max_pixels, min_side, report_url, write=True,
                          drop_duplicates=False)
    if not usable:
        raise screening.DataError(f"no usable images in {data_dir}; see {report_url}")
    return usable, (None if index.layout == "unlabelled" else index.class_names)
