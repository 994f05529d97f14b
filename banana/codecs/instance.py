"""Instance segmentation of one prompted class as an RGB image, and back.

Vision Banana answers "segment every box" by painting each box its own colour on a background
colour the prompt names; decoding groups similar colours into instance masks under a threshold.
The colours are not part of the answer, only their grouping is, so scoring matches instances by
overlap (:mod:`banana.evaluation.instances`), never by colour.

Encoding (the training target) is deterministic so a generator can learn it: the background (every
pixel that is not an instance of the prompted class) is ``background``; instances are ranked
left to right by their centroid column and the k-th gets the k-th colour of
:func:`~banana.codecs.palettes.well_separated_palette` (the background excluded).

Decoding, per image: pixels within ``threshold`` (RGB units, 0..255) of the background colour are
background (0). The rest are clustered greedily: the most frequent remaining colour seeds a
cluster, every remaining pixel within ``threshold`` of it joins, the seed moves to the members'
mean and membership is taken once more; repeat until no pixel is left. Clusters are numbered
1, 2, ...: first those whose colour is one of the codec's (in the palette's order, so
``decode(encode(x))`` returns ``x``'s partition with the encoder's ids), then any other colours
left to right by mean column.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ._arrays import as_tensor, check_rgb_image, like_input
from .palettes import REJECT_RADIUS, _as_rgb, _pairwise_min_distance, well_separated_palette

#: Instances one picture can hold by default (the world has at most 6 objects per scene).
MAX_INSTANCES = 16


class InstanceCodec:
    """Instance ids of one class <-> RGB, decoded by colour clustering.

    Args:
        background: the colour of every non-instance pixel (named in the prompt).
        max_instances: the most instances one picture may hold (the palette's size).
        threshold: clustering radius in RGB units (0..255). Default: ``min(REJECT_RADIUS,
            d_min / 2)``, ``d_min`` the smallest distance between two of the codec's colours
            (background included), so the encoder's colours never merge.
        min_pixels: decoded clusters smaller than this become background (speckle of a drifting
            generator is not an instance).

    Example:
        >>> codec = InstanceCodec()
        >>> rgb = codec.encode(instances)     # int [..., H, W], 0 = background -> float [..., 3, H, W]
        >>> instances2 = codec.decode(rgb)    # -> int64 [..., H, W], the same partition
    """

    def __init__(self, background: Sequence[int] = (0, 0, 0), max_instances: int = MAX_INSTANCES,
                 threshold: float | None = None, min_pixels: int = 1) -> None:
        if isinstance(max_instances, bool) or not isinstance(max_instances, (int, np.integer)) or max_instances < 1:
            raise ValueError(f"max_instances must be a positive integer; got {max_instances!r}")
        if int(min_pixels) < 1:
            raise ValueError(f"min_pixels must be >= 1; got {min_pixels!r}")
        self.background = _as_rgb(background, "background colour")
        self.max_instances = int(max_instances)
        self.colors = np.asarray(well_separated_palette(self.max_instances, exclude=[self.background]), np.uint8)
        d_min = _pairwise_min_distance(np.concatenate([self.colors, np.asarray([self.background], np.uint8)]))
        limit = min(REJECT_RADIUS, d_min / 2)
        if threshold is None:
            threshold = limit
        if not (0 < float(threshold) <= d_min / 2 + 1e-9):
            raise ValueError(f"threshold must be in (0, {d_min / 2:.1f}] (half the closest pair of the codec's "
                             f"colours), got {threshold!r}")
        self.threshold = float(threshold)
        self.min_pixels = int(min_pixels)

    def __repr__(self) -> str:
        return (f"InstanceCodec(background={self.background}, max_instances={self.max_instances}, "
                f"threshold={self.threshold:.1f}, min_pixels={self.min_pixels})")

    # ----------------------------------------------------------------- encode
    def encode(self, instances):
        """Instance ids ``[..., H, W]`` (int; 0 = background, any positive id = one instance) ->
        float RGB ``[..., 3, H, W]`` in [0, 1]. Instances get colours left to right."""
        t, was_numpy = as_tensor(instances, "instances")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"instances must be an integer array of ids, got dtype {t.dtype}")
        if t.ndim < 2:
            raise ValueError(f"instances must be [..., H, W], got shape {tuple(t.shape)}")
        ids = t.detach().cpu().numpy().astype(np.int64)
        if ids.size and ids.min() < 0:
            raise ValueError(f"instance ids must be >= 0 (0 = background), found {int(ids.min())}")
        flat = ids.reshape(-1, *ids.shape[-2:])
        out = np.empty((flat.shape[0], 3, *ids.shape[-2:]), np.float32)
        for i, image in enumerate(flat):
            ranked = _left_to_right(image)
            if len(ranked) > self.max_instances:
                raise ValueError(f"image {i} holds {len(ranked)} instances; this codec paints at most "
                                 f"{self.max_instances} (InstanceCodec(max_instances=...))")
            rgb = np.empty((*image.shape, 3), np.uint8)
            rgb[:] = self.background
            for k, instance_id in enumerate(ranked):
                rgb[image == instance_id] = self.colors[k]
            out[i] = np.moveaxis(rgb, -1, 0) / 255.0
        result = out.reshape(*ids.shape[:-2], 3, *ids.shape[-2:])
        return result if was_numpy else torch.from_numpy(result).to(t.device)

    # ----------------------------------------------------------------- decode
    def decode(self, rgb):
        """Float RGB ``[..., 3, H, W]`` in [0, 1] -> int64 instance ids ``[..., H, W]`` (0 = background,
        1..m numbered left to right)."""
        t, was_numpy = as_tensor(rgb, "rgb")
        t = check_rgb_image(t, "rgb")
        if t.ndim < 3:
            raise ValueError(f"rgb must be [..., 3, H, W], got shape {tuple(t.shape)}")
        pixels = t.detach().cpu().numpy().astype(np.float64) * 255.0
        flat = pixels.reshape(-1, 3, *pixels.shape[-2:])
        out = np.stack([self._decode_one(np.moveaxis(image, 0, -1)) for image in flat]) if len(flat) else \
            np.zeros((0, *pixels.shape[-2:]), np.int64)
        result = out.reshape(*pixels.shape[:-3], *pixels.shape[-2:])
        return like_input(torch.from_numpy(result).to(t.device), False) if not was_numpy else result

    def _decode_one(self, image: np.ndarray) -> np.ndarray:
        h, w, _ = image.shape
        px = image.reshape(-1, 3)
        labels = np.zeros(len(px), np.int64)
        remaining = np.linalg.norm(px - np.asarray(self.background, np.float64), axis=1) > self.threshold
        clusters = []
        while remaining.any():
            candidates = np.round(px[remaining]).astype(np.int64)
            colours, counts = np.unique(candidates, axis=0, return_counts=True)
            centre = colours[np.argmax(counts)].astype(np.float64)
            for _ in range(2):              # join, re-centre on the members, join again
                members = remaining & (np.linalg.norm(px - centre, axis=1) <= self.threshold)
                if not members.any():       # the re-centred mean drifted off every pixel: keep the seed
                    break
                centre = px[members].mean(axis=0)
            members = remaining & (np.linalg.norm(px - centre, axis=1) <= self.threshold)
            if not members.any():
                members = remaining & np.all(np.round(px) == colours[np.argmax(counts)], axis=1)
            remaining &= ~members
            if members.sum() >= self.min_pixels:
                clusters.append(members)
        columns, rows = np.tile(np.arange(w), h), np.repeat(np.arange(h), w)
        palette = self.colors.astype(np.float64)

        def rank_key(k):                    # the encoder's colour order first, then left to right
            centre = px[clusters[k]].mean(axis=0)
            distance = np.linalg.norm(palette - centre, axis=1)
            index = int(np.argmin(distance)) if distance.min() <= self.threshold else len(palette)
            return index, columns[clusters[k]].mean(), rows[clusters[k]].mean(), -clusters[k].sum()

        order = sorted(range(len(clusters)), key=rank_key)
        for rank, k in enumerate(order, start=1):
            labels[clusters[k]] = rank
        return labels.reshape(h, w)



class MaskCodec:
    """One referred object as an RGB image, and back (the referring-segmentation target).

    The referred object's pixels are ``foreground`` and every other pixel ``background``, both
    named in the prompt (default white on black). Decoding gives each pixel to the nearer of the
    two colours (ties: background), so any colour noise under half their distance is harmless.
    """

    def __init__(self, foreground: Sequence[int] = (255, 255, 255), background: Sequence[int] = (0, 0, 0)) -> None:
        self.foreground = _as_rgb(foreground, "foreground colour")
        self.background = _as_rgb(background, "background colour")
        if self.foreground == self.background:
            raise ValueError(f"foreground and background must differ, both are {self.foreground}")

    def __repr__(self) -> str:
        return f"MaskCodec(foreground={self.foreground}, background={self.background})"

    def encode(self, mask):
        """Boolean (or 0/1) ``[..., H, W]`` -> float RGB ``[..., 3, H, W]`` in [0, 1]."""
        t, was_numpy = as_tensor(mask, "mask")
        if t.is_floating_point():
            raise ValueError(f"mask must be boolean or 0/1 integers, got dtype {t.dtype}")
        if t.ndim < 2:
            raise ValueError(f"mask must be [..., H, W], got shape {tuple(t.shape)}")
        values = t.detach().cpu().numpy()
        if values.size and not np.isin(values, (0, 1)).all():
            raise ValueError("mask must hold only 0/1 (or False/True)")
        colours = np.asarray([self.background, self.foreground], np.float32) / 255.0
        rgb = np.moveaxis(colours[values.astype(np.int64)], -1, -3).astype(np.float32)
        return rgb if was_numpy else torch.from_numpy(rgb).to(t.device)

    def decode(self, rgb):
        """Float RGB ``[..., 3, H, W]`` in [0, 1] -> boolean ``[..., H, W]`` (True: the referred object)."""
        t, was_numpy = as_tensor(rgb, "rgb")
        t = check_rgb_image(t, "rgb")
        if t.ndim < 3:
            raise ValueError(f"rgb must be [..., 3, H, W], got shape {tuple(t.shape)}")
        pixels = torch.movedim(t.detach().double(), -3, -1) * 255.0
        near_fg = (pixels - torch.tensor(self.foreground, dtype=torch.float64, device=t.device)).norm(dim=-1)
        near_bg = (pixels - torch.tensor(self.background, dtype=torch.float64, device=t.device)).norm(dim=-1)
        result = near_fg < near_bg
        return result.cpu().numpy() if was_numpy else result

def _left_to_right(image: np.ndarray) -> list[int]:
    """The positive ids of one ``[H, W]`` instance map, ranked by centroid column (ties: row, then id)."""
    ids = [int(i) for i in np.unique(image) if i > 0]
    rows, columns = np.indices(image.shape)
    return sorted(ids, key=lambda i: (float(columns[image == i].mean()), float(rows[image == i].mean()), i))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two instance maps group the same pixels (ids may differ; 0 must match 0)."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
