"""Split the usable images into train and validation: stratified by class, seeded, written to the
outputs (split.json) and reused by a resumed or evaluated job, so validation never changes under
the user's feet. --kfold's fold assignment is made and kept the same way (folds.json)."""
import collections
import json
import logging
import warnings

from sklearn.model_selection import train_test_split

import obs_utils
from errors import UserError

from . import class_counts

log = logging.getLogger("inputs")

FILE_NAME = "split.json"


def stratified_split(samples, val_ratio, seed):
    """(train, val) lists of Samples. Classes with a single image go to train only, since a
    stratified split needs two; duplicates were removed by screening, so nothing leaks."""
    if not 0 < val_ratio < 1:
        raise UserError(f"--val_ratio={val_ratio}: use a number between 0 and 1, e.g. 0.2")
    counts = {}
    for sample in samples:
        counts[sample.label] = counts.get(sample.label, 0) + 1
    single = [s for s in samples if counts[s.label] < 2]
    rest = [s for s in samples if counts[s.label] >= 2]
    if not rest:
        return sorted(samples, key=lambda s: s.rel), []
    # At least one image of each class on each side (each class here has two or more).
    n_classes = len({s.label for s in rest})
    n_val = min(max(round(len(rest) * val_ratio), n_classes), len(rest) - n_classes)
    train, val = train_test_split(rest, test_size=n_val, random_state=seed, shuffle=True,
                                  stratify=[s.label for s in rest])
    train = sorted(train + single, key=lambda s: s.rel)
    return train, sorted(val, key=lambda s: s.rel)


def to_json(train, val, seed, val_ratio, cap=0, left_out=()):
    """The split as saved; `left_out`: training images --max_train_per_class=`cap` left out."""
    return json.dumps({"seed": seed, "val_ratio": val_ratio, "max_train_per_class": cap,
                       "train": [[s.rel, s.label] for s in train],
                       "val": [[s.rel, s.label] for s in val],
                       "left_out": [[s.rel, s.label] for s in left_out]},
                      ensure_ascii=False, indent=0)


def reuse(text, samples, where, cap=0):
    """(train, val) from a saved split, matched against today's usable samples by name.

    Saved images that are gone (or now set aside) are dropped; images new since the split go to
    train, so validation stays the set it was; the images --max_train_per_class left out stay
    out. A label that changed is an error: the saved validation results would not mean what
    they say; so is another --max_train_per_class than the split was made with."""
    try:
        saved = json.loads(text)
        parts = {part: [(str(rel), int(label)) for rel, label in
                         (saved[part] if part != "left_out" else saved.get(part, []))]
                 for part in ("train", "val", "left_out")}
        saved_cap = int(saved.get("max_train_per_class", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{where} is not a split this job wrote ({type(exc).__name__}: "
                         f"{exc}); delete it to split again, or use a new --train_url") from None
    if saved_cap != cap:
        raise UserError(f"{where} was made with --max_train_per_class={saved_cap}, this job "
                         f"asks for {cap}: pass {saved_cap}, or use a new --train_url (or delete "
                         f"{where} to split again)")
    by_name = {s.rel: s for s in samples}
    train, val, left_out, gone = [], [], [], 0
    for part, out in (("train", train), ("val", val), ("left_out", left_out)):
        for rel, label in parts[part]:
            sample = by_name.pop(rel, None)
            if sample is None:
                gone += 1
            elif sample.label != label:
                raise UserError(f"{where}: {rel} had label {label} when the split was made and "
                                 f"has {sample.label} now; start a new --train_url, or delete "
                                 f"{where} to split again")
            else:
                out.append(sample)
    new = sorted(by_name.values(), key=lambda s: s.rel)
    if cap:  # new images join train while their class is below the cap
        counts, below = collections.Counter(s.label for s in train), []
        for sample in new:
            counts[sample.label] += 1
            if counts[sample.label] <= cap:
                below.append(sample)
        new = below
    if gone or new:
        log.warning("reusing %s: %d images of it are gone, %d new images go to train",
                    where, gone, len(new))
    return sorted(train + new, key=lambda s: s.rel), val


def load_or_make(url, samples, val_ratio, seed, write=True, cap=0):
    """The split saved at `url` if there is one, else a new one (written there if `write`),
    with at most `cap` training images a class (class_counts.cap_per_class; 0: all)."""
    if obs_utils.exists(url):
        train, val = reuse(obs_utils.read_text(url), samples, url, cap)
        log.info("split: reusing %s: %d train, %d validation images", url, len(train), len(val))
        return train, val
    train, val = stratified_split(samples, val_ratio, seed)
    train, left_out = class_counts.cap_per_class(train, cap, seed)
    if write:
        obs_utils.write_text(url, to_json(train, val, seed, val_ratio, cap, left_out))
    log.info("split: %d train, %d validation images (val_ratio %.2f, seed %d)%s%s",
             len(train), len(val), val_ratio, seed,
             f"; --max_train_per_class={cap} left out {len(left_out)} training images"
             if left_out else "", f", saved to {url}" if write else "")
    return train, val


FOLDS_FILE = "folds.json"


def stratified_folds(samples, k, seed):
    """Fold ids (0..k-1), one per sample in order: stratified by class and seeded
    (scikit-learn's StratifiedKFold). A class with fewer than k images is missing from some
    folds' held-out parts, never from all of their training parts."""
    from sklearn.model_selection import StratifiedKFold

    labels = [s.label for s in samples]
    largest = max(labels.count(label) for label in set(labels))
    if k > largest:
        raise UserError(f"--kfold={k}, but no class has {k} images (the largest has "
                        f"{largest}): use --kfold={max(2, largest)} or fewer folds")
    ids = [0] * len(samples)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # classes smaller than k: said once below, not per class
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, held_out) in enumerate(splitter.split(labels, labels)):
            for i in held_out:
                ids[i] = fold
    small = sum(1 for label in set(labels) if labels.count(label) < k)
    if small:
        log.warning("%d classes have fewer than %d images: some folds hold none of them out",
                    small, k)
    return ids


def load_or_make_folds(url, samples, k, seed, write=True):
    """Fold ids of `samples` from the assignment saved at `url` (images new since then get
    fold (position mod k); a changed label or another k is an error), else a new one
    (written there if `write`)."""
    if obs_utils.exists(url):
        try:
            saved = json.loads(obs_utils.read_text(url))
            by_name = {str(rel): (int(label), int(fold)) for rel, label, fold in saved["folds"]}
            saved_k = int(saved["k"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{url} is not a fold assignment this job wrote "
                             f"({type(exc).__name__}: {exc}); use a new --train_url") from None
        if saved_k != k:
            raise UserError(f"{url} holds {saved_k} folds, not --kfold={k}: use --kfold="
                             f"{saved_k} to go on with it, or a new --train_url")
        ids, new = [], 0
        for i, sample in enumerate(samples):
            label, fold = by_name.get(sample.rel, (sample.label, None))
            if label != sample.label:
                raise UserError(f"{url}: {sample.rel} had label {label} when the folds were "
                                 f"made and has {sample.label} now; use a new --train_url")
            new += fold is None
            ids.append(i % k if fold is None else fold)
        log.info("folds: reusing %s (%d folds%s)", url, k,
                 f"; {new} new images spread over them" if new else "")
        return ids
    ids = stratified_folds(samples, k, seed)
    if write:
        obs_utils.write_text(url, json.dumps({"k": k, "seed": seed, "folds": [
            [s.rel, s.label, fold] for s, fold in zip(samples, ids)]}, ensure_ascii=False,
            indent=0))
    log.info("folds: %d stratified folds of %d images (seed %d)%s", k, len(samples), seed,
             f", saved to {url}" if write else "")
    return ids


def fold_split(samples, fold_ids, fold):
    """(train, val) of fold `fold`: validation is the images of that fold."""
    train = [s for s, f in zip(samples, fold_ids) if f != fold]
    val = [s for s, f in zip(samples, fold_ids) if f == fold]
    return train, val
