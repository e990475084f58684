"""Label levels (--label_levels_sep): class names such as "可回收物/易拉罐" read as an item under
its category. Shared by training's label map, which refuses names that do not split evenly,
and the deployed service, which names the predicted class's levels (levels.json in the package
holds the separator). Plain Python: the service runs on the platform's Python 3.7."""
import json
import os

FILE_NAME = "levels.json"


def split(class_names, sep):
    """[(names, group of each class id)] of the coarser levels, coarsest first: "a/b/c" gives
    "a" and "a/b". ValueError, naming a class, when the names do not all split into as many
    non-empty parts (at least two)."""
    parts = [name.split(sep) for name in class_names]
    for name, p in zip(class_names, parts):
        if len(p) != len(parts[0]) or len(p) < 2 or "" in p:
            raise ValueError("class {!r} does not split into the {} non-empty levels of "
                             "{!r}".format(name, max(len(parts[0]), 2), class_names[0]))
    found = []
    for depth in range(1, len(parts[0])):
        prefixes = [sep.join(p[:depth]) for p in parts]
        names = sorted(set(prefixes))
        index = {name: i for i, name in enumerate(names)}
        found.append((names, [index[p] for p in prefixes]))
    return found


def save(folder, sep):
    with open(os.path.join(folder, FILE_NAME), "w", encoding="utf-8") as f:
        json.dump({"sep": sep}, f, ensure_ascii=False)


def load(folder, class_names):
    """The package's levels (split's form), [] when it has no levels.json."""
    path = os.path.join(folder, FILE_NAME)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return split(class_names, json.load(f)["sep"])
