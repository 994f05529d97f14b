"""The codec ceiling: how well a *perfect* generator could score.

A generator that emitted exactly the encoded target would still lose accuracy when its
image is stored with 8 bits per channel and decoded again. Measuring that loss first
(ground truth -> encode -> quantise -> decode -> metric) tells us which part of a later
error belongs to the codec and which to the model, which is the first lesson the peers
(Painter, Marigold) learned.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

#: Depth codec variants compared by default: (label, DepthCodec kwargs, alignment used to score it).
DEFAULT_DEPTH_VARIANTS: tuple[tuple[str, dict, str], ...] = (
    ("metric cube walk (paper)", {"warp": "metric", "colormap": "cube"}, "none"),
    ("metric grayscale", {"warp": "metric", "colormap": "gray"}, "none"),
    ("metric viridis", {"warp": "metric", "colormap": "viridis"}, "none"),
    ("affine grayscale (Marigold)", {"warp": "affine", "colormap": "gray"}, "affine"),
)

#: The headline metric of each task, used for the compact ceiling table.
HEADLINE = {"segmentation": "miou", "depth": "abs_rel", "normals": "mean"}


def codec_ceiling(semantic: np.ndarray, depth: np.ndarray, normals: np.ndarray,
                  palette: Mapping[str, tuple[int, int, int]],
                  bits: Sequence[int | None] = (None, 8),
                  depth_variants: Sequence[tuple[str, dict, str]] = DEFAULT_DEPTH_VARIANTS,
                  noise_std: float = 0.0, seed: int = 0):
    """Score each codec on its own round trip of the ground truth.

    Args:
        semantic: class ids ``[N, H, W]`` (ids index ``palette`` in order, 255 = ignore).
        depth: z-depth in metres ``[N, H, W]``, ``inf`` for sky (excluded from scores).
        normals: unit camera-space normals ``[N, 3, H, W]``, zero vectors where undefined.
        palette: class name -> RGB 0..255, in class-id order.
        bits: precisions to simulate; ``None`` is the float round trip, 8 an 8-bit PNG.
        depth_variants: ``(label, DepthCodec kwargs, align)`` triples.
        noise_std: optional Gaussian noise (in [0,1] RGB units) added before quantising,
            a crude stand-in for a generator's colour drift.
        seed: seeds that noise.

    Returns:
        A tidy ``pandas.DataFrame`` with columns ``task, codec, bits, metric, value``.
    """
    import pandas as pd
    import torch

    from banana.codecs import DepthCodec, NormalsCodec, SegmentationCodec, quantize
    from banana.evaluation.metrics import depth_metrics, mean_iou, normal_metrics

    semantic, depth, normals = np.asarray(semantic), np.asarray(depth), np.asarray(normals)
    if semantic.ndim != 3 or depth.shape != semantic.shape or normals.shape != (
            semantic.shape[0], 3, *semantic.shape[1:]):
        raise ValueError("codec_ceiling expects semantic [N,H,W], depth [N,H,W] and normals [N,3,H,W]; "
                         f"got {semantic.shape}, {depth.shape}, {normals.shape}")
    generator = torch.Generator().manual_seed(seed)

    def degrade(rgb: np.ndarray, b: int | None) -> np.ndarray:
        if noise_std > 0:
            noise = torch.randn(rgb.shape, generator=generator).numpy() * noise_std
            rgb = np.clip(rgb + noise.astype(rgb.dtype), 0.0, 1.0)
        return rgb if b is None else quantize(rgb, bits=b)

    rows: list[dict] = []

    def add(task: str, codec: str, b: int | None, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"task": task, "codec": codec, "bits": "float" if b is None else str(b),
                             "metric": name, "value": float(value)})

    seg = SegmentationCodec(dict(palette))
    normal_codec = NormalsCodec()
    seg_rgb = seg.encode(semantic.astype(np.int64))
    normal_rgb = normal_codec.encode(normals.astype(np.float32))
    for b in bits:
        scores = mean_iou(seg.decode(degrade(seg_rgb, b)), semantic, seg.num_classes,
                          ignore_index=seg.ignore_index, class_names=seg.class_names)
        add("segmentation", "palette, nearest colour", b,
            {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
             "rejected_fraction": scores["rejected_fraction"]})
        add("normals", "(1-x, 1+y, 1+z)/2", b,
            normal_metrics(normal_codec.decode(degrade(normal_rgb, b)), normals))
        for label, kwargs, align in depth_variants:
            codec = DepthCodec(**kwargs)
            decoded = codec.decode(degrade(codec.encode(depth.astype(np.float32)), b))
            add("depth", label, b, depth_metrics(decoded, depth, align=align))
    return pd.DataFrame(rows, columns=["task", "codec", "bits", "metric", "value"])


def ceiling_table(frame, metrics: Mapping[str, Sequence[str]] | None = None):
    """Pivot :func:`codec_ceiling`'s tidy frame to one row per (task, codec, metric) and one
    column per precision (``float``, ``8``, ...), keeping the metrics named in ``metrics``."""
    metrics = metrics or {"segmentation": ("miou", "rejected_fraction"),
                          "depth": ("abs_rel", "rmse", "delta1"),
                          "normals": ("mean", "median", "within_11.25")}
    keep = np.zeros(len(frame), dtype=bool)
    for task, names in metrics.items():
        keep |= (frame["task"] == task).to_numpy() & frame["metric"].isin(names).to_numpy()
    return frame[keep].pivot_table(index=["task", "codec", "metric"], columns="bits", values="value",
                                   sort=False)
