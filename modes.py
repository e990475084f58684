"""train.py's modes besides training: --mode=eval and predict (a finished model on other
images), ensemble (one package of up to three models) and oof (a k-fold run's folds gathered).
train.py parses the flags and hands each mode its typed config."""
import json

import obs_utils
from errors import UserError
from training import distribute


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
    from inputs import fetch, prepare

    data_cfg = run.data
    data_dir = fetch.fetch_data(run.eval.test_data_url, cache_root, threads=data_cfg.obs_threads)
    samples = prepare.prepare_test(data_dir, class_names,
                                   obs_utils.join(run.train_url, "screening_report_test.json"),
                                   cache_root, data_cfg.data_format, data_cfg.manifest or None,
                                   data_cfg.max_image_pixels, data_cfg.min_image_side)
    metrics = stage.evaluate(samples, probabilities_of(samples), class_names, run.train_url,
                             work_dir)
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

    package.check_destination(run.train_url, wanted.overwrite_model)  # before any work
    members = ensemble.load_members(wanted.members, wanted.member_weights,
                                    lambda url: inference.local_copy(url, cache_root))
    work_dir = distribute.work_dir(run.train_url, cache_root, None)
    folder = package.fresh_folder(package.staging_folder(work_dir))
    class_names = ensemble.save(members, folder, wanted.tta)
    metrics, tested = None, ""
    if run.eval.test_data_url:
        metrics, count = _test_metrics(
            run, class_names, lambda samples: inference.saved_model_probabilities(
                folder, [s.path for s in samples], run.feed.batch_size), cache_root, work_dir)
        tested = (f"; on {count} test images: top-1 {metrics['top1_accuracy']:.4f} (reports "
                  f"in {obs_utils.join(run.train_url, stage.FOLDER)})")
    package.finish(folder, class_names, metrics, wanted.runtime)
    url = package.publish_staged(folder, run.train_url, wanted.overwrite_model)
    return f"ensemble of {len(members)} model{'s' if len(members) > 1 else ''}: {url}{tested}"
