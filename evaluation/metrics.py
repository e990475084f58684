"""Classification metrics from labels and predicted probabilities, as one JSON-ready dict (plain
python numbers), so reports, logs and the ModelArts metric file all read the same figures."""
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from models import gap

from . import scores

# Up to this many classes metrics.json holds the whole confusion matrix; above it (a
# 50,000-class matrix would be 2.5 billion counts) the most confused pairs only, and the
# plot shows the most confused classes.
MATRIX_CLASSES = 100
PAIRS_KEPT = 100


def _check(y_true, probabilities, class_names):
    """(y_true, probabilities) as numpy arrays (or the TopScores given), or ValueError saying
    what does not fit."""
    y_true = np.asarray(y_true)
    dense = scores.is_dense(probabilities)
    if dense:
        probabilities = np.asarray(probabilities)
        if probabilities.dtype not in (np.float32, np.float64):  # float32 stays: 50,000 columns
            probabilities = probabilities.astype(np.float64)
    n_classes = len(class_names)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be a 1-D array of class ids, got shape {y_true.shape}")
    if len(probabilities.shape) != 2:
        raise ValueError(f"probabilities must be a 2-D array [images, classes], got shape "
                         f"{probabilities.shape}")
    if len(y_true) != probabilities.shape[0]:
        raise ValueError(f"{len(y_true)} labels but {probabilities.shape[0]} rows of "
                         f"probabilities: they must be one per image")
    if probabilities.shape[1] != n_classes:
        raise ValueError(f"probabilities have {probabilities.shape[1]} columns but there are "
                         f"{n_classes} class names: they must be one per class")
    if len(y_true) == 0:
        raise ValueError("no images to evaluate: y_true is empty")
    if n_classes == 0:
        raise ValueError("no classes: class_names is empty")
    if not np.issubdtype(y_true.dtype, np.integer):
        if not np.all(np.equal(np.mod(y_true, 1), 0)):
            raise ValueError("y_true must hold integer class ids")
        y_true = y_true.astype(np.int64)
    if y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(f"y_true has class ids outside 0..{n_classes - 1} "
                         f"(found {int(y_true.min())}..{int(y_true.max())})")
    if not np.all(np.isfinite(probabilities if dense else probabilities.scores)):
        raise ValueError("probabilities contain NaN or infinity")
    return y_true, probabilities


def confused_pairs(y_true, y_pred):
    """[(true id, predicted id, images)] of every wrong (true, predicted) pair, most images
    first (then by ids): the confusion matrix's off-diagonal, sparse."""
    wrong = y_true != y_pred
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([y_true[wrong], y_pred[wrong]], axis=1), axis=0,
                              return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))
    return [(int(pairs[i, 0]), int(pairs[i, 1]), int(counts[i])) for i in order]


def confusion_matrix(y_true, y_pred, ids):
    """Counts [len(ids), len(ids)] of (true, predicted) among the class ids `ids` (rows true,
    columns predicted, in the order of `ids`)."""
    position = {c: i for i, c in enumerate(ids)}
    matrix = np.zeros((len(ids), len(ids)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in position and p in position:
            matrix[position[t], position[p]] += 1
    return matrix


def global_average_precision(y_true, probabilities):
    """GAP (models/gap.py: the Kaggle landmark definition) of each image's top class, its
    probability the confidence."""
    ids, confidence = scores.top_k(probabilities, 1)
    return gap.global_average_precision(confidence[:, 0], ids[:, 0] == np.asarray(y_true))


def class_mean_average_precision(y_true, probabilities):
    """MAP over classes: for each class with images, the average precision of ranking every
    image by that class's probability (scikit-learn's average_precision_score, one class
    against the rest), then the mean over those classes. From TopScores, the lower bound of
    scores.class_mean_average_precision_top over the classes each image kept."""
    if not scores.is_dense(probabilities):
        return scores.class_mean_average_precision_top(
            y_true, scores.top_k(probabilities, probabilities.ids.shape[1]),
            probabilities.classes)
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities)
    present = np.unique(y_true)
    return float(np.mean([average_precision_score(y_true == c, probabilities[:, c])
                          for c in present]))


def classification_metrics(y_true, probabilities, class_names, top_k=5):
    """The metrics dict: counts, top-1/top-k accuracy, macro and weighted precision/recall/F1,
    one entry per class in id order, and the confusion matrix (rows true, columns predicted).

    The top-k figure is stored as "top5_accuracy" whatever k is (k = min(top_k, classes); the
    k used is in "top_k"). "gap" and "map" are global_average_precision and
    class_mean_average_precision. "confused_pairs": the PAIRS_KEPT most frequent wrong
    [true, predicted, images]; the whole matrix only up to MATRIX_CLASSES classes. Macro
    averages are over classes with images in y_true: a class the data has none of cannot be
    measured, and scoring it 0 would only hide the others. `probabilities` may be TopScores
    (evaluation/scores.py): every figure is the same but "map", then over the kept classes
    (their number in "map_kept_classes")."""
    y_true, probabilities = _check(y_true, probabilities, class_names)
    n_images, n_classes = probabilities.shape
    k = max(1, min(int(top_k), n_classes))
    labels = list(range(n_classes))
    best, _ = scores.top_k(probabilities, k)
    y_pred = best[:, 0]
    top1 = float(np.mean(y_pred == y_true))
    topk = float(np.mean(np.any(best == y_true[:, None], axis=1)))

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0
    pairs = confused_pairs(y_true, y_pred)
    most_confused = {}
    for true, predicted, _ in pairs:  # most images first: the first pair of a class wins
        most_confused.setdefault(true, predicted)

    per_class = []
    for i in labels:
        confused = class_names[most_confused[i]] if i in most_confused else ""
        per_class.append({"id": i, "name": str(class_names[i]), "support": int(support[i]),
                          "precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "most_confused_with": str(confused)})
    result = {
        "images": int(n_images),
        "classes": int(n_classes),
        "top_k": k,
        "top1_accuracy": top1,
        "top5_accuracy": topk,
        "gap": global_average_precision(y_true, probabilities),
        "map": class_mean_average_precision(y_true, probabilities),
        "macro": {"precision": float(np.mean(precision[present])),
                  "recall": float(np.mean(recall[present])),
                  "f1": float(np.mean(f1[present]))},
        "weighted": {"precision": float(np.average(precision, weights=support)),
                     "recall": float(np.average(recall, weights=support)),
                     "f1": float(np.average(f1, weights=support))},
        "per_class": per_class,
        "confused_pairs": [[str(class_names[t]), str(class_names[p]), n]
                           for t, p, n in pairs[:PAIRS_KEPT]],
    }
    if not scores.is_dense(probabilities):
        result["map_kept_classes"] = int(probabilities.ids.shape[1])
    if n_classes <= MATRIX_CLASSES:
        result["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels).tolist()
    return result


def summary_line(metrics):
    """One line for logs and the top of per_class.md."""
    k = metrics.get("top_k", 5)
    return (f"top-1 {metrics['top1_accuracy']:.4f}, top-{k} {metrics['top5_accuracy']:.4f}, "
            f"GAP {metrics['gap']:.4f}, macro F1 {metrics['macro']['f1']:.4f} on {metrics['images']} images "
            f"({metrics['classes']} classes)")
