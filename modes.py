"""train.py's modes besides training: --mode=eval and predict (a finished model on other
images), ensemble (one package of up to three models), oof (a k-fold run's folds gathered) and
clean (the labels a model doubts). train.py parses the flags and hands each mode its typed
config."""
import json
import logging
import os

import obs_utils
from errors import UserError
from training import distribute

log = logging.getLogger("train")


def gather_folds(run):
    """--mode=oof: the out-of-fold probabilities of a --kfold run's folds, all done (each
    trained alone with --fold, perhaps as jobs side by side), gathered; returns the summary."""
    from inputs import label_map, split
    from training import folds

    folds_url = obs_utils.join(run.train_url, split.FOLDS_FILE)
    if not obs_utils.exists(folds_url):
        raise UserError(f"--mode=oof: {run.train_url} holds no {split.FOLDS_FILE}: give the "
                        "--train_url of a --kfold run")
    k = int(json.loads(obs_utils.read_text(folds_url))["k"])
    class_names = label_map.load(obs_utils.join(run.train_url, label_map.FILE_NAME))
    summary = folds.gather(run.train_url, k, class_names)
    return (f"{k}-fold cross-validated top-1 {summary['cv_top1_accuracy']['mean']:.4f} +- "
            f"{summary['cv_top1_accuracy']['sd']:.4f} over {summary['images']} images; "
            f"{obs_utils.join(run.train_url, folds.OOF_FILE)}")


def _test_metrics(run, class_names, probabilities_of, cache_root, work_dir):
    """Fetch and screen the labelled --test_data_url, run `probabilities_of(samples)` on it
    and write the reports; returns (metrics, number of images)."""
    from evaluation import stage
    from inputs import fetch, label_map, prepare

    levels = label_map.levels(class_names, run.data.label_levels_sep)  # before the fetch
    data_cfg = run.data
    data_dir = fetch.fetch_data(run.eval.test_data_url, cache_root, threads=data_cfg.obs_threads)
    samples = prepare.prepare_test(data_dir, class_names,
                                   obs_utils.join(run.train_url, "screening_report_test.json"),
                                   cache_root, data_cfg.data_format, data_cfg.manifest or None,
                                   data_cfg.max_image_pixels, data_cfg.min_image_side)
    metrics = stage.evaluate(samples, probabilities_of(samples), class_names, run.train_url,
                             work_dir, levels=levels)
    return metrics, len(samples)


def evaluate_or_predict(run, cache_root):
    """--mode=eval (reports on labelled images) or --mode=predict (top-k of unlabelled ones)
    for --eval_model; returns the one-line summary."""
    wanted, data_cfg = run.eval, run.data
    if not wanted.eval_model or not wanted.test_data_url:
        raise UserError(f"--mode={run.mode} needs --eval_model (a model/ folder, a train_url "
                         "or a .weights.h5 file) and --test_data_url (the images)")
    from evaluation import inference, stage
    from inputs import fetch, prepare

    predictor = inference.load(wanted.eval_model, cache_root, run.feed.batch_size)
    work_dir = distribute.work_dir(run.train_url, cache_root, None)
    if run.mode == "eval":
        metrics, count = _test_metrics(run, predictor.class_names, predictor.probabilities,
                                       cache_root, work_dir)
        return (f"evaluated {predictor.source} on {count} images: top-1 "
                f"{metrics['top1_accuracy']:.4f}; reports in "
                f"{obs_utils.join(run.train_url, stage.FOLDER)}")
    data_dir = fetch.fetch_data(wanted.test_data_url, cache_root, threads=data_cfg.obs_threads)
    samples = prepare.prepare_unlabelled(data_dir,
                                         obs_utils.join(run.train_url,
                                                        "screening_report_test.json"),
                                         cache_root, data_cfg.max_image_pixels,
                                         data_cfg.min_image_side)
    url = stage.predict(samples, predictor.probabilities(samples), predictor.class_names,
                        run.train_url, work_dir, wanted.top_k)
    return f"top-{wanted.top_k} classes of {len(samples)} images in {url}"


def make_ensemble(run, cache_root):
    """--mode=ensemble: one package of the --members models, serving their weighted mean
    probabilities over the --tta views; evaluated through its own serving signature on
    --test_data_url when given (the metrics go into its config.json). Returns the summary."""
    wanted = run.export
    if not wanted.members:
        raise UserError("--mode=ensemble needs --members=URL[,URL[,URL]]: the model/ packages "
                        "or train_urls of 1-3 finished runs on the same classes")
    from evaluation import inference, stage
    from export import ensemble, package
    from inputs import label_map

    package.check_destination(run.train_url, wanted.overwrite_model)  # before any work
    members = ensemble.load_members(wanted.members, wanted.member_weights,
                                    lambda url: inference.local_copy(url, cache_root))
    work_dir = distribute.work_dir(run.train_url, cache_root, None)
    folder = package.fresh_folder(package.staging_folder(work_dir))
    class_names = ensemble.save(members, folder, wanted.tta)
    label_map.levels(class_names, run.data.label_levels_sep)  # names that split, or refused
    metrics, tested = None, ""
    if run.eval.test_data_url:
        metrics, count = _test_metrics(
            run, class_names, lambda samples: inference.saved_model_probabilities(
                folder, [s.path for s in samples], run.feed.batch_size,
                [s.label for s in samples]), cache_root, work_dir)
        tested = (f"; on {count} test images: top-1 {metrics['top1_accuracy']:.4f} (reports "
                  f"in {obs_utils.join(run.train_url, stage.FOLDER)})")
    package.finish(folder, class_names, metrics, wanted.runtime, run.data.label_levels_sep)
    url = package.publish_staged(folder, run.train_url, wanted.overwrite_model)
    return f"ensemble of {len(members)} model{'s' if len(members) > 1 else ''}: {url}{tested}"


def clean_labels(run, cache_root):
    """--mode=clean: the labels of --data_url that --eval_model's probabilities doubt
    (evaluation/label_issues.py), as {train_url}/label_issues.csv and a cleaned manifest.
    A --kfold run's train_url gives its out-of-fold probabilities (each image predicted by a
    fold that never trained on it); else the model predicts every image. Returns the summary."""
    wanted, data_cfg = run.eval, run.data
    if not wanted.eval_model or not data_cfg.data_url:
        raise UserError("--mode=clean needs --eval_model (a model/ folder, a train_url, a "
                        ".weights.h5 file, or a --kfold run's train_url) and --data_url (the "
                        "labelled images to check)")
    from evaluation import inference, label_issues
    from inputs import fetch, label_map, oof, prepare
    from training import folds

    data_dir = fetch.fetch_data(data_cfg.data_url, cache_root, threads=data_cfg.obs_threads)
    report_url = obs_utils.join(run.train_url, "screening_report_clean.json")
    oof_url = obs_utils.join(wanted.eval_model, folds.OOF_FILE)
    from_folds = obs_utils.is_dir(wanted.eval_model) and obs_utils.exists(oof_url)
    if from_folds:
        class_names = label_map.load(obs_utils.join(wanted.eval_model, label_map.FILE_NAME))
        files, _, found = oof.read(oof_url, class_names)
    else:
        predictor = inference.load(wanted.eval_model, cache_root, run.feed.batch_size)
        class_names = predictor.class_names
    samples = prepare.prepare_test(data_dir, class_names, report_url, cache_root,
                                   data_cfg.data_format, data_cfg.manifest or None,
                                   data_cfg.max_image_pixels, data_cfg.min_image_side)
    if from_folds:
        row = {name: i for i, name in enumerate(files)}
        missing = [s.rel for s in samples if s.rel not in row]
        if missing:
            raise UserError(f"{len(missing)} images of --data_url are not in {oof_url} (e.g. "
                            f"{', '.join(missing[:3])}): clean the data the --kfold run "
                            "trained on")
        probabilities = found[[row[s.rel] for s in samples]]
    else:
        probabilities = predictor.probabilities(samples)
    rule = wanted.clean_rule if wanted.clean_rule != "auto" else (
        "cleanlab" if from_folds else "confidence")
    if rule == "cleanlab" and not from_folds:
        log.warning("--clean_rule=cleanlab on a model's predictions of images it may have "
                    "trained on finds fewer issues than on out-of-fold probabilities (give "
                    "the train_url of a --kfold run)")
    labels = [s.label for s in samples]
    flagged = label_issues.find(labels, probabilities, rule, wanted.clean_keep_accuracy)
    work_dir = distribute.work_dir(run.train_url, cache_root, None)
    issues, manifest = label_issues.write(work_dir, [s.rel for s in samples], labels,
                                          probabilities, flagged, class_names, rule)
    if obs_utils.is_remote(run.train_url):
        for path in (issues, manifest):
            obs_utils.copy(path, obs_utils.join(run.train_url, os.path.basename(path)))
    return (f"{int(flagged.sum())} of {len(samples)} labels doubted ({rule} rule, "
            f"{'out-of-fold probabilities' if from_folds else 'the model'}): "
            f"{obs_utils.join(run.train_url, label_issues.FILE_NAME)}; the others in "
            f"{obs_utils.join(run.train_url, label_issues.MANIFEST)} (train on them with "
            f"--data_url={data_cfg.data_url} --manifest=<that file>)")
