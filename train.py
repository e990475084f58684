"""The ModelArts training job.

    python train.py --data_url=obs://bucket/garbage/train_data/ --train_url=obs://bucket/out/
    python train.py --mode=eval --eval_model=out/model --test_data_url=test/ --train_url=out/test
    python train.py --mode=predict --eval_model=out/model --test_data_url=new_images/
    python train.py --mode=ensemble --members=out1,out2,out3 --tta=flip --train_url=ens/

`data_url` and `train_url` may be obs://, s3:// or local paths; with no --data_url the job runs
on the built-in demo data with a small configuration. Flags the platform adds are logged and
ignored. A training run fetches, screens and splits the data, trains (one custom loop on
tf.distribute, with resume), evaluates the best weights on the validation set and writes the
model package to {train_url}/model/. This file only orchestrates: the flags are in flags.py,
the other modes in modes.py, and each stage lives in its own package (inputs/, models/,
training/, evaluation/, export/).
"""
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, replace

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)  # ModelArts runs the boot file from another working directory
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ chatter, not our log

import runtime_check  # noqa: E402

runtime_check.check("train.py")  # one line on an old Python/TensorFlow, before any import fails

# Only what parsing the flags needs is imported here; each stage is imported where it is
# used, so `--help` and a bad flag are answered in a second, without loading TensorFlow.
import config  # noqa: E402 - the typed configuration each stage is handed
import obs_utils  # noqa: E402
from cli import import_tensorflow, run_job, setup_logging  # noqa: E402
from errors import UserError  # noqa: E402
from flags import parse_args  # noqa: E402 - the flag table and the demo's settings
from training import distribute  # noqa: E402 - the cluster, from TF_CONFIG (no TensorFlow)
from version import VERSION  # noqa: E402

log = logging.getLogger("train")

def versions():
    """Installed versions of what the run depends on (read from metadata: no heavy imports)."""
    import importlib.metadata

    found = {"modelarts-classifier": VERSION, "python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "boto3"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def package_plan(run):
    """(keep the package in train_url, overwrite it), decided before any training: an existing
    package is refused now, not after hours, unless --overwrite_model; the same job restarted
    after it finished (ModelArts' auto restart) keeps the one it wrote, or writes it again when
    its upload was cut short. Every worker decides alike, so all stop together."""
    from export import package
    from training import checkpoints

    if not run.export.export_model:
        return False, False
    if run.export.overwrite_model or not package.exists(run.train_url):
        return False, run.export.overwrite_model
    if checkpoints.job_finished(run.train_url, run.fit.max_epochs):
        if package.complete(run.train_url):
            return True, False
        log.warning("%s is incomplete (its upload was cut short?): this job writes it again",
                    package.model_url(run.train_url))
        return False, True
    package.check_destination(run.train_url, overwrite=False)  # raises, saying what to do
    return False, False


@dataclass
class Job:
    """What every training run of one job shares (one run, or one per fold with --kfold)."""
    strategy: object      # made first: MultiWorkerMirroredStrategy requires it
    tf_config: dict
    chief: bool
    pretrained: object    # models.weights.prepare's match, or None
    cache_root: str
    data_dir: str
    flags: object         # what was parsed, and the flags ignored, for run_config.json
    unknown: list


def train_and_export(run, flags, unknown, cache_root):
    """The training job (run: config.RunConfig; flags: what was parsed, for run_config.json):
    data, then one training run (train_one), or with --kfold one per fold (train_folds).
    Returns the one-line summary."""
    started = time.time()
    data_cfg, spec = run.data, run.model
    tf_config = distribute.cluster_from_env(port=run.worker_port)
    # Before any other TensorFlow work: MultiWorkerMirroredStrategy must come first.
    strategy = distribute.make_strategy(tf_config)
    from inputs import fetch, prepare
    from models import init_from, weights
    from training import folds

    if data_cfg.kfold < 0 or data_cfg.kfold == 1:
        raise UserError(f"--kfold={data_cfg.kfold}: use 2 or more folds, or 0 for one model")
    if data_cfg.fold >= 0 and data_cfg.kfold == 0:
        raise UserError(f"--fold={data_cfg.fold} needs --kfold (how many folds there are)")
    if data_cfg.kfold > 1 and data_cfg.fold >= data_cfg.kfold:
        raise UserError(f"--fold={data_cfg.fold} but --kfold={data_cfg.kfold}: folds are "
                        f"numbered 0..{data_cfg.kfold - 1}")
    if data_cfg.distill_from:
        check_distillation(run)
    runs = ([run] if data_cfg.kfold <= 1 else
            [replace(run, train_url=folds.fold_url(run.train_url, i)) for i in fold_numbers(run)])
    plans = [package_plan(each) for each in runs]  # an existing package: refused now
    # The weights file is fetched, read and matched now: a wrong one stops the job before any
    # data is screened or anything is written to train_url.
    if spec.init_from and spec.pretrained_weights:
        raise UserError("--init_from and --pretrained_weights both name the backbone's "
                        "weights: give one")
    earlier = init_from.fetch(spec.init_from, cache_root) if spec.init_from else None
    pretrained = weights.prepare(spec.backbone, earlier.weights_path if earlier else
                                 spec.pretrained_weights, cache_root, spec.input_size)
    data_dir = fetch.fetch_data(data_cfg.data_url, cache_root, threads=data_cfg.obs_threads)
    val_dir = (fetch.fetch_data(data_cfg.val_data_url, cache_root, threads=data_cfg.obs_threads)
               if data_cfg.val_data_url else None)
    # Every worker prepares the same data (same seed, or the split already saved); only the
    # chief writes to train_url.
    chief = distribute.is_chief(tf_config)
    data = prepare.prepare(data_dir, run.train_url, cache_root, data_cfg.data_format,
                           data_cfg.manifest or None, val_dir, data_cfg.val_ratio,
                           data_cfg.seed, data_cfg.max_image_pixels, data_cfg.min_image_side,
                           write=chief, drop_val_copies=data_cfg.drop_val_copies,
                           kfold=data_cfg.kfold,
                           min_images_per_class=data_cfg.min_images_per_class,
                           max_images_per_class=data_cfg.max_images_per_class,
                           max_train_per_class=data_cfg.max_train_per_class)
    if spec.num_classes and spec.num_classes != len(data.class_names):
        raise UserError(f"--num_classes={spec.num_classes} but the data has "
                         f"{len(data.class_names)} classes; leave it at 0 to take the data's")
    if earlier:
        head, note = init_from.head_arrays(earlier, data.class_names)
        pretrained = replace(pretrained, head=head)
        log.info("--init_from %s: the backbone from %s; %s", earlier.url, earlier.weights_path,
                 note)
    if data_cfg.distill_from:
        from inputs import oof

        data.soft = oof.soft_targets(data_cfg.distill_from, data.class_names)
    job = Job(strategy, tf_config, chief, pretrained, cache_root, data_dir, flags, unknown)
    if data_cfg.kfold <= 1:
        summary, _ = train_one(run, data, plans[0], job)
        return f"done in {time.time() - started:.0f} s: {summary}"
    return train_folds(run, data, runs, plans, job, started)


def check_distillation(run):
    """--distill_from's settings, before any work: soft targets need the softmax head, a
    weight in [0, 1] and a train_url of the round's own."""
    if run.model.head != "softmax":
        raise UserError(f"--distill_from trains on soft targets, which --head={run.model.head} "
                        "does not take: use --head=softmax")
    if not 0.0 <= run.feed.distill_weight <= 1.0:
        raise UserError(f"--distill_weight={run.feed.distill_weight}: use a number in [0, 1] "
                        "(the one-hot label's share of the target)")
    if run.data.distill_from.rstrip("/") == run.train_url.rstrip("/"):
        raise UserError("--distill_from is this job's own --train_url: give the distilled "
                        "round a --train_url of its own")
    from inputs import oof

    oof.check_exists(run.data.distill_from)


def fold_numbers(run):
    """The folds this job trains: --fold alone, else every one."""
    return [run.data.fold] if run.data.fold >= 0 else list(range(run.data.kfold))


def train_folds(run, data, runs, plans, job, started):
    """--kfold: each fold of fold_numbers a run of its own in {train_url}/folds/<i>/ (a fold
    finished before is kept; one cut short resumes), its held-out probabilities written
    beside it; once every fold is done, gathered (training.folds.gather)."""
    from evaluation import scores
    from inputs import label_map, split
    from training import folds

    k = run.data.kfold
    largest = max(list(data.folds).count(i) for i in range(k))
    if not scores.keeps_dense(largest, len(data.class_names)):
        raise UserError(f"--kfold={k}: out-of-fold probabilities of {largest} images x "
                        f"{len(data.class_names)} classes per fold are too many to keep: use "
                        "fewer classes (--min_images_per_class) or train without --kfold")
    for fold, fold_run, plan in zip(fold_numbers(run), runs, plans):
        if folds.fold_done(run.train_url, fold, run.fit.max_epochs):
            log.info("fold %d of %d: done before, kept (%s)", fold, k, fold_run.train_url)
            continue
        fold_data = data.fold(fold)
        log.info("fold %d of %d: %d train, %d held-out images -> %s", fold, k,
                 len(fold_data.train), len(fold_data.val), fold_run.train_url)
        if job.chief:  # the fold's folder is a train_url like any other: labels, split
            label_map.save(obs_utils.join(fold_run.train_url, label_map.FILE_NAME),
                           data.class_names)
            obs_utils.write_text(obs_utils.join(fold_run.train_url, split.FILE_NAME),
                                 split.to_json(fold_data.train, fold_data.val, run.data.seed,
                                               1.0 / k))
        summary, probabilities = train_one(fold_run, fold_data, plan, job)
        if job.chief:
            folds.write_fold_oof(run.train_url, fold, fold_data.val, probabilities,
                                 data.class_names)
        log.info("fold %d of %d: %s", fold, k, summary)
    if not job.chief:
        return f"worker done in {time.time() - started:.0f} s; the chief writes the outputs"
    pending = [i for i in range(k) if not folds.fold_done(run.train_url, i, run.fit.max_epochs)]
    if pending:
        return (f"done in {time.time() - started:.0f} s: folds {fold_numbers(run)} of {k} "
                f"trained; {pending} still to run, then train.py --mode=oof "
                f"--train_url={run.train_url} gathers them")
    summary = folds.gather(run.train_url, k, data.class_names)
    return (f"done in {time.time() - started:.0f} s: {k}-fold cross-validated top-1 "
            f"{summary['cv_top1_accuracy']['mean']:.4f} +- {summary['cv_top1_accuracy']['sd']:.4f}"
            f"; out-of-fold probabilities in {obs_utils.join(run.train_url, folds.OOF_FILE)}")


def train_one(run, data, plan, job):
    """One training run into run.train_url: training, then (chief) evaluation of the best
    weights on the validation set and the model package. Returns (summary line, validation
    probabilities; None on the other workers)."""
    feed, spec = run.feed, run.model
    from evaluation import inference, stage
    from export import package
    from inputs import balance, label_map, screening
    from training import job as training

    keep_package, overwrite = plan
    levels = label_map.levels(data.class_names, run.data.label_levels_sep)  # checked first
    if run.fit.level_weights and len(run.fit.level_weights) != len(levels):
        raise UserError(f"--level_weights: {len(run.fit.level_weights)} weight(s) for "
                        f"{len(levels)} coarser level(s) of the class names (--label_levels_sep"
                        f"={run.data.label_levels_sep!r}): give one per level, coarsest first")
    counts = screening.class_counts(data.train, len(data.class_names))
    balance.log_plan(counts, feed.balance, data.class_names, len(data.train))
    balance.log_sampler(feed.sampler, feed.balance, feed.batch_size, feed.pk_images, counts)
    run_config = {"config": config.as_dict(run), "flags": vars(job.flags),
                  "ignored_flags": job.unknown, "versions": versions(),
                  "local_data_dir": job.data_dir, "classes": len(data.class_names),
                  "train_images": len(data.train), "val_images": len(data.val),
                  "cluster": job.tf_config}
    if job.chief:
        obs_utils.write_text(obs_utils.join(run.train_url, "run_config.json"),
                             json.dumps(run_config, indent=2, ensure_ascii=False))
    work_dir = distribute.work_dir(run.train_url, job.cache_root, job.tf_config)
    result = training.train(run, data, work_dir, job.strategy, job.chief, job.pretrained)
    if not job.chief:
        return "worker done; the chief writes the outputs", None
    model = training.final_model(spec, data.class_names, result)
    probabilities = inference.keras_probabilities(model, data.val, feed.input_size,
                                                  feed.resize_mode, feed.batch_size,
                                                  run.export.tta)
    metrics = stage.evaluate(data.val, probabilities, data.class_names, run.train_url,
                             work_dir, result.log_csv, levels)
    where = "no model package (--export_model=false)"
    if keep_package:
        where = f"the package this job wrote before, kept: {package.model_url(run.train_url)}"
    elif run.export.export_model:
        url = package.export(model, data.class_names, feed.input_size, feed.resize_mode,
                             metrics, run.train_url, work_dir, run.export.runtime, overwrite,
                             run.export.tta, run.data.label_levels_sep)
        where = f"model package {url}"
    if not run.data.data_url and run.export.export_model and run.data.kfold <= 1:  # the demo
        log.info("once served, ask it: curl -F images=@%s http://127.0.0.1:8080/",
                 data.val[0].path)
    return (f"{len(result.history)} epoch{'' if len(result.history) == 1 else 's'} run now; "
            f"best weights on validation: top-1 {metrics['top1_accuracy']:.4f}, macro F1 "
            f"{metrics['macro']['f1']:.4f}; {where}; reports in "
            f"{obs_utils.join(run.train_url, stage.FOLDER)}"), probabilities


def configure(flags):
    """The typed config of parsed flags, with the augmentation preset and its per-op
    overrides resolved (a bad combination is a UserError)."""
    from inputs import augment

    settings = augment.resolve(flags.augment, {
        name: getattr(flags, name) for name in augment.DEFAULTS})
    return config.from_flags(flags, settings)


def main(argv=None):
    setup_logging()
    flags, unknown = parse_args(argv)
    if unknown:
        log.warning("ignoring flags this job does not know (the platform adds some): %s",
                    " ".join(unknown))

    import_tensorflow()  # after the flags parse, without its start-up banner

    def job():
        from inputs import fetch

        cache_root = fetch.resolve_cache_root(flags.local_data_root)
        run = configure(flags)
        if run.mode == "train":
            return train_and_export(run, flags, unknown, cache_root)
        import modes

        if run.mode == "ensemble":
            return modes.make_ensemble(run, cache_root)
        if run.mode == "oof":
            return modes.gather_folds(run)
        if run.mode == "clean":
            return modes.clean_labels(run, cache_root)
        return modes.evaluate_or_predict(run, cache_root)

    return run_job(job, (obs_utils.ObsError, UserError), log)


if __name__ == "__main__":
    sys.exit(main())
