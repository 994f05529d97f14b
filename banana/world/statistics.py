"""Summaries of a built world dataset, for data cards and sanity plots.

Each function takes one split of the ``DatasetDict`` from :func:`banana.world.load_world`
(numpy format) and returns a tidy ``pandas.DataFrame`` ready for seaborn.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np


def _batches(split, columns: Sequence[str], batch_size: int = 256):
    for start in range(0, len(split), batch_size):
        rows = split[start:start + batch_size]
        yield {c: np.asarray(rows[c]) for c in columns}


def class_pixel_frequencies(split, class_names: Sequence[str]):
    """Fraction of pixels of each semantic class (one row per class)."""
    import pandas as pd

    counts = np.zeros(len(class_names), dtype=np.int64)
    for batch in _batches(split, ["semantic"]):
        counts += np.bincount(batch["semantic"].reshape(-1), minlength=len(class_names))[:len(class_names)]
    return pd.DataFrame({"class": list(class_names), "pixels": counts,
                         "fraction": counts / max(int(counts.sum()), 1)})


def object_table(split):
    """One row per object instance: shape, colour name and image position, from ``objects``."""
    import pandas as pd

    rows = []
    for index, objects in enumerate(split["objects"]):
        for obj in json.loads(objects):
            rows.append({"scene": index, "shape": obj["shape"], "color": obj["color_name"],
                         "position": obj.get("image_position")})
    return pd.DataFrame(rows, columns=["scene", "shape", "color", "position"])


def depth_by_class(split, class_names: Sequence[str], max_pixels_per_class: int = 20000, seed: int = 0):
    """A seeded subsample of (class, depth in metres) pairs over finite-depth pixels."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for batch in _batches(split, ["semantic", "depth"]):
        sem, depth = batch["semantic"].reshape(-1), batch["depth"].reshape(-1)
        finite = np.isfinite(depth)
        frames.append(pd.DataFrame({"class_id": sem[finite], "depth_m": depth[finite]}))
    table = pd.concat(frames, ignore_index=True)
    keep = []
    for _, rows in table.groupby("class_id").indices.items():
        keep.append(rows if len(rows) <= max_pixels_per_class
                    else rng.choice(rows, max_pixels_per_class, replace=False))
    table = table.iloc[np.sort(np.concatenate(keep))] if keep else table
    table["class"] = [class_names[i] for i in table["class_id"]]
    return table.reset_index(drop=True)


def label_consistency(split, object_class_ids: Sequence[int], sky_class_id: int = 0):
    """Counts of label-convention violations per split (all should be zero).

    * sky pixels with finite depth or a non-zero normal,
    * non-sky pixels with infinite depth or a normal that is not unit length,
    * object pixels without an instance id, or stuff pixels with one.
    """
    import pandas as pd

    totals = dict.fromkeys(["sky_finite_depth", "sky_nonzero_normal", "surface_infinite_depth",
                            "surface_non_unit_normal", "object_without_instance",
                            "stuff_with_instance"], 0)
    for batch in _batches(split, ["semantic", "depth", "normals", "instance"]):
        sem, depth, normals, inst = batch["semantic"], batch["depth"], batch["normals"], batch["instance"]
        sky = sem == sky_class_id
        norm = np.linalg.norm(normals, axis=1)
        is_object = np.isin(sem, list(object_class_ids))
        totals["sky_finite_depth"] += int((sky & np.isfinite(depth)).sum())
        totals["sky_nonzero_normal"] += int((sky & (norm > 0)).sum())
        totals["surface_infinite_depth"] += int((~sky & ~np.isfinite(depth)).sum())
        totals["surface_non_unit_normal"] += int((~sky & (np.abs(norm - 1) > 1e-3)).sum())
        totals["object_without_instance"] += int((is_object & (inst == 0)).sum())
        totals["stuff_with_instance"] += int((~is_object & (inst > 0)).sum())
    return pd.DataFrame({"check": list(totals), "violations": list(totals.values())})


def world_reading(frequencies, held_out_objects, checks) -> str:
    """What a world build holds, as Markdown computed from notebook 02's tables: the train class
    shares (and so what the majority-class floor scores per pixel), where the held-out
    shape/colour combinations occur, and the label checks. ``frequencies``: stacked
    :func:`class_pixel_frequencies` with a ``split`` column; ``held_out_objects``: objects of a
    held-out combination per split (a Series); ``checks``: violations per check and split."""
    train = frequencies[frequencies["split"] == "train"].sort_values("fraction", ascending=False)
    top = train.iloc[0]
    shares = ", ".join(f"{r['class']} {r['fraction']:.0%}" for _, r in train.iterrows())
    leaked = {split: int(n) for split, n in held_out_objects.items() if split != "held_out" and n > 0}
    violations = int(np.asarray(checks).sum())
    return "\n".join([
        f"- **Class balance (train pixels):** {shares}. Painting every pixel *{top['class']}* gets "
        f"{top['fraction']:.0%} of pixels right, yet an mIoU of at most 1/7 (one class of seven): pixel accuracy "
        "flatters, so banana reads mIoU against the per-pixel majority-class floor (the most frequent train class "
        "at each pixel position).",
        f"- **Held-out combinations:** {int(held_out_objects.get('held_out', 0))} objects in the held-out split; "
        + ("none in train, val or test, so the rule holds." if not leaked else f"**leaked** into {leaked}."),
        f"- **Label checks:** {violations} violations over every split and check"
        + (" (sky at infinite depth, unit normals, instance ids on objects only)." if not violations else "."),
    ]) + "\n"
