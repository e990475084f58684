"""What evaluation keeps of a model's output: the [images, classes] probabilities while they fit
in memory, else (50,000 classes on 50,000 images would be 10 GB of float32) each image's best
classes with their probabilities, and the probability of its own label. Metrics, reports and
label cleaning read both forms through the functions here."""
from dataclasses import dataclass

import numpy as np

# Above this many values (images x classes: 256 MiB of float32) inference keeps the top
# TOP_KEPT classes of each image instead of the matrix.
DENSE_VALUES = 2 ** 26
TOP_KEPT = 10


@dataclass
class TopScores:
    """Each image's `ids.shape[1]` best class ids and their probabilities, best first, and
    `label_scores`: the probability of the image's own label (NaN where it has none)."""
    ids: np.ndarray           # int32 [images, k]
    scores: np.ndarray        # float32 [images, k]
    label_scores: np.ndarray  # float32 [images]
    classes: int

    @property
    def shape(self):
        return (len(self.ids), self.classes)

    def __len__(self):
        return len(self.ids)


def is_dense(probabilities):
    return not isinstance(probabilities, TopScores)


def keeps_dense(images, classes):
    """Whether probabilities of `images` x `classes` stay a matrix."""
    return images * classes <= DENSE_VALUES


def top_k(probabilities, k):
    """(ids [N, k'], scores [N, k']) of the k' = min(k, classes) best classes, best first. A
    matrix's ties keep the lower id first, as argmax does; TopScores give what they kept,
    which must be at least k' columns."""
    if not is_dense(probabilities):
        if probabilities.ids.shape[1] < min(k, probabilities.classes):
            raise ValueError(f"{k} best classes asked of scores that kept "
                             f"{probabilities.ids.shape[1]}")
        return probabilities.ids[:, :k], probabilities.scores[:, :k]
    probabilities = np.asarray(probabilities)
    k = min(k, probabilities.shape[1])
    if probabilities.shape[1] <= 1000 or k >= probabilities.shape[1]:
        ids = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    else:  # partition the k best out first (a tie at the k-th place may keep a higher id)
        candidates = np.sort(np.argpartition(-probabilities, k - 1, axis=1)[:, :k], axis=1)
        order = np.argsort(-np.take_along_axis(probabilities, candidates, axis=1), axis=1,
                           kind="stable")
        ids = np.take_along_axis(candidates, order, axis=1)
    return ids, np.take_along_axis(probabilities, ids, axis=1)


def label_scores(probabilities, labels):
    """The probability each image gives its own label."""
    if not is_dense(probabilities):
        return probabilities.label_scores
    labels = np.asarray(labels)
    return np.asarray(probabilities)[np.arange(len(labels)), labels]


class Collector:
    """Gathers inference batch by batch in the form `keeps_dense` chooses for the whole set;
    `add` takes a batch's probabilities [b, classes] and its labels (None: unlabelled)."""

    def __init__(self, images, classes, k=TOP_KEPT):
        self.dense = keeps_dense(images, classes)
        self.classes, self.k = classes, min(k, classes)
        self.parts = []

    def add(self, probabilities, labels=None):
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if self.dense:
            self.parts.append(probabilities)
            return
        ids, scores = top_k(probabilities, self.k)
        own = (np.full(len(probabilities), np.nan, np.float32) if labels is None
               else label_scores(probabilities, labels).astype(np.float32))
        self.parts.append((ids.astype(np.int32), scores.astype(np.float32), own))

    def result(self):
        if self.dense:
            return np.concatenate(self.parts) if self.parts else np.zeros((0, self.classes),
                                                                          np.float32)
        ids, scores, own = (np.concatenate(p) for p in zip(*self.parts))
        return TopScores(ids, scores, own, self.classes)


def class_mean_average_precision_top(y_true, top, classes):
    """MAP over classes from each image's kept best classes: class c ranks the images that
    keep c, by its probability; an image of class c that does not keep c counts as never
    retrieved (precision 0). A lower bound on the MAP of the whole matrix, equal to it when
    every class is kept; tied probabilities share one threshold, as in scikit-learn's
    average_precision_score."""
    ids, scores = top
    y_true = np.asarray(y_true)
    k = ids.shape[1]
    image = np.repeat(np.arange(len(ids)), k)
    cls, score = ids.reshape(-1).astype(np.int64), scores.reshape(-1)
    order = np.lexsort((-score, cls))
    cls, score, positive = cls[order], score[order], (y_true[image[order]] == cls[order])
    starts = np.r_[0, np.flatnonzero(cls[1:] != cls[:-1]) + 1]  # each class's first entry
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(cls)]))
    run_last = np.r_[(cls[1:] != cls[:-1]) | (score[1:] != score[:-1]), True]
    run_end = np.flatnonzero(run_last)[np.r_[0, np.cumsum(run_last[:-1])]]
    hits = np.cumsum(positive)
    hits_before_group = np.where(group_start > 0, hits[group_start - 1], 0)
    precision = (hits[run_end] - hits_before_group) / (run_end - group_start + 1)
    summed = np.bincount(cls[positive], weights=precision[positive], minlength=classes)
    counts = np.bincount(y_true, minlength=classes)
    present = counts > 0
    return float(np.mean(summed[present] / counts[present]))


def coarser(probabilities, of_class, classes):
    """Probabilities [N, `classes`] of a coarser level (inputs/label_map.levels): each
    class's probability summed into its group's (`of_class`: the group of each class id). From
    TopScores, the sums of the kept classes (the others are below the 10th best); None when
    that matrix would not fit either."""
    of_class = np.asarray(of_class)
    if is_dense(probabilities):
        probabilities = np.asarray(probabilities, dtype=np.float32)
        order = np.argsort(of_class, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(of_class[order]) != 0])
        summed = np.add.reduceat(probabilities[:, order], starts, axis=1)
        out = np.zeros((len(probabilities), classes), np.float32)
        out[:, of_class[order][starts]] = summed
        return out
    if not keeps_dense(len(probabilities), classes):
        return None
    out = np.zeros((len(probabilities), classes), np.float32)
    rows = np.repeat(np.arange(len(probabilities)), probabilities.ids.shape[1])
    np.add.at(out, (rows, of_class[probabilities.ids.reshape(-1)]),
              probabilities.scores.reshape(-1))
    return out
