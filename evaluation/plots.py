"""Pictures of an evaluation: the confusion matrix and the training curves, drawn with
matplotlib's Agg canvas on a private Figure (no pyplot, so no global state and no display).

Class names are drawn only in a font that has every glyph they use: an image full of empty
boxes is worse than none, and the names are always in per_class.csv / per_class.md."""
import csv
import functools
import io
import logging
import math

import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

import obs_utils

log = logging.getLogger("evaluation")

# Families tried first for names outside the default font (CJK above all).
PREFERRED_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
    "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei",
    "PingFang SC", "Hiragino Sans GB", "Noto Sans CJK JP", "Noto Sans CJK TC",
    "Arial Unicode MS", "Noto Sans",
)
# Fonts whose "glyphs" are placeholders for every code point: they would pass any check.
PLACEHOLDER_FONTS = ("last resort",)
NAMES_CAPTION = "class names: see per_class.csv / per_class.md"
MAX_INCHES = 30.0
DPI = 100


@functools.lru_cache(maxsize=None)
def _charmap(path):
    """Code points the font at `path` has a real glyph for (empty if it cannot be read)."""
    try:
        return frozenset(code for code, glyph in FT2Font(path).get_charmap().items() if glyph)
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def _candidate_fonts():
    """Font paths to try, best first: matplotlib's default, the preferred families, the rest."""
    entries = [f for f in font_manager.fontManager.ttflist
               if not any(p in f.name.lower() for p in PLACEHOLDER_FONTS)]
    rank = {name.lower(): i for i, name in enumerate(PREFERRED_FAMILIES)}
    preferred = sorted((f for f in entries if f.name.lower() in rank),
                       key=lambda f: (rank[f.name.lower()], f.weight != 400, f.style != "normal"))
    others = sorted((f for f in entries if f.name.lower() not in rank),
                    key=lambda f: (f.weight != 400, f.style != "normal", f.name, f.fname))
    default = font_manager.findfont(font_manager.FontProperties(), fallback_to_default=True)
    paths = [default] + [f.fname for f in preferred + others]
    return list(dict.fromkeys(paths))


def font_for(texts):
    """Path of an installed font that has a glyph for every character of `texts`, or None.

    Line breaks are not drawn as glyphs, so they need none."""
    needed = {ord(ch) for text in texts for ch in str(text) if ch not in "\n\r"}
    for path in _candidate_fonts():
        if needed <= _charmap(path):
            return path
    return None


def _save(fig, path):
    FigureCanvasAgg(fig)
    fig.savefig(str(path), dpi=DPI)
    return str(path)


def _normalised(matrix, normalize, row_totals=None):
    matrix = np.asarray(matrix, dtype=np.float64)
    if not normalize:
        return matrix
    totals = (matrix.sum(axis=1, keepdims=True) if row_totals is None
              else np.asarray(row_totals, dtype=np.float64).reshape(-1, 1))
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def _legend_lines(class_names, max_chars=40, ids=None):
    lines = []
    for i, name in zip(range(len(class_names)) if ids is None else ids, class_names):
        name = " ".join(str(name).split())
        if len(name) > max_chars:
            name = name[:max_chars - 3] + "..."
        lines.append(f"{i}: {name}")
    return lines


def confusion_matrix_png(path, confusion_matrix, class_names, normalize=True, ids=None,
                         title=None, row_totals=None):
    """Write the confusion matrix as a PNG at local `path` and return the path.

    Axes carry class ids; the size grows with the class count up to MAX_INCHES; cells are
    annotated only up to 20 classes. An "id: name" legend is drawn beside the matrix when one
    installed font has every glyph of the names, else a caption points to per_class.csv.
    A part of a larger matrix: `ids` the class ids of its rows and columns, `row_totals` each
    row's images in the whole matrix (what a row is normalised by), `title` what it shows."""
    values = _normalised(confusion_matrix, normalize, row_totals)
    n = len(class_names)
    if values.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {values.shape} but there are {n} class "
                         f"names: it must be {n} x {n}")
    side = min(max(6.0, 0.3 * n + 3.0), MAX_INCHES)
    cell_pt = 72.0 * side * 0.75 / max(n, 1)
    tick_size = max(3.0, min(9.0, 0.7 * cell_pt))
    step = 1 if cell_pt >= 5 else math.ceil(5 / cell_pt)

    lines = _legend_lines(class_names, ids=ids)
    font = font_for(lines)
    rows = max(1, min(n, 50))
    columns = math.ceil(n / rows)
    legend_size = max(4.0, min(10.0, 0.7 * 72.0 * side * 0.9 / rows))
    longest = max((len(line) for line in lines), default=0)
    column_inches = min(6.0, 0.9 * legend_size / 72.0 * longest + 0.3)
    width = side + (columns * column_inches if font else 0.0)

    fig = Figure(figsize=(width, side), layout="constrained")
    if font:
        ax, legend = fig.subplots(1, 2, width_ratios=[side, columns * column_inches])
    else:
        ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None,
                      interpolation="nearest")
    ticks = np.arange(0, n, step)
    shown = [str(t if ids is None else ids[t]) for t in ticks]
    ax.set_xticks(ticks, shown, fontsize=tick_size, rotation=90)
    ax.set_yticks(ticks, shown, fontsize=tick_size)
    ax.set_xlabel("predicted class id")
    ax.set_ylabel("true class id")
    ax.set_title(title or "confusion matrix" + (" (each true row sums to 1)" if normalize
                                               else " (counts)"))
    fig.colorbar(image, ax=ax, fraction=0.03, shrink=0.8, pad=0.02)
    if n <= 20:
        high = values.max() / 2 if values.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=min(9.0, tick_size),
                        color="white" if values[i, j] > high else "black")
    if font:
        legend.set_axis_off()
        props = font_manager.FontProperties(fname=font, size=legend_size)
        spacing = min(1.0 / rows, 2.0 * legend_size / 72.0 / side)
        for index, line in enumerate(lines):
            column, row = divmod(index, rows)
            legend.text(column / columns, 1 - (row + 0.5) * spacing, line, fontproperties=props,
                        va="center", ha="left", transform=legend.transAxes, parse_math=False)
    else:
        fig.supxlabel(NAMES_CAPTION, fontsize=10)
        log.info("confusion matrix %s: class names left out of the image because no installed "
                 "font has their glyphs; they are in per_class.csv / per_class.md", path)
    return _save(fig, path)


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _column(rows, *names):
    """Values of the first of `names` the log has, as floats (NaN where blank); None if none."""
    for name in names:
        if rows and name in rows[0]:
            return [_number(row.get(name)) for row in rows]
    return None


def read_training_log(log_csv):
    """Rows of a Keras CSVLogger file (local path or URL), one per epoch in order; a resumed
    job's repeated epochs keep their last row. ValueError if it has no rows."""
    text = obs_utils.read_text(str(log_csv))
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    if not rows:
        raise ValueError(f"{log_csv} has no epochs: the training log is empty, nothing to plot")
    if "epoch" not in rows[0]:
        return rows
    by_epoch = {}
    for index, row in enumerate(rows):
        epoch = _number(row.get("epoch"))
        by_epoch[index if math.isnan(epoch) else int(epoch)] = row
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def training_curves_png(path, log_csv):
    """Write loss, accuracy and learning rate per epoch (three panels) as a PNG at `path`."""
    rows = read_training_log(log_csv)
    epochs = _column(rows, "epoch")
    if epochs is None or any(math.isnan(e) for e in epochs):
        epochs = list(range(len(rows)))
    x = [int(e) + 1 for e in epochs]

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    panels = fig.subplots(1, 3)
    series = (
        (panels[0], "loss", (("train", ("loss",)), ("validation", ("val_loss",)))),
        (panels[1], "accuracy", (("train", ("accuracy", "acc")),
                                 ("validation", ("val_accuracy", "val_acc")),
                                 ("train top-5", ("top5_accuracy",)),
                                 ("validation top-5", ("val_top5_accuracy",)))),
        (panels[2], "learning rate", (("learning rate", ("learning_rate", "lr")),)),
    )
    for ax, title, curves in series:
        drawn = []
        for label, names in curves:
            values = _column(rows, *names)
            if values is None or all(math.isnan(v) for v in values):
                continue
            style = "--" if "top-5" in label else "-"
            ax.plot(x, values, style, marker="o" if len(x) < 30 else None, markersize=3,
                    label=label)
            drawn.extend(v for v in values if not math.isnan(v))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "not in the log", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        if title == "learning rate" and min(drawn) > 0:
            ax.set_yscale("log")
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)
