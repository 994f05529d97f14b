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


def _depth_range(depth_range: tuple[float, float] | None) -> tuple[float, float]:
    from banana.world import MAX_DEPTH, MIN_DEPTH

    return (MIN_DEPTH, MAX_DEPTH) if depth_range is None else (float(depth_range[0]), float(depth_range[1]))


def codec_ceiling(semantic: np.ndarray, depth: np.ndarray, normals: np.ndarray,
                  palette: Mapping[str, tuple[int, int, int]],
                  bits: Sequence[int | None] = (None, 8),
                  depth_variants: Sequence[tuple[str, dict, str]] = DEFAULT_DEPTH_VARIANTS,
                  noise_std: float = 0.0, seed: int = 0, depth_range: tuple[float, float] | None = None):
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
        depth_range: ``(min_depth, max_depth)`` of the evaluation protocol (default the world's,
            ``banana.world.MIN_DEPTH``/``MAX_DEPTH``): decoded depth is clipped to it, as a model's is.

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

    min_depth, max_depth = _depth_range(depth_range)
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
            add("depth", label, b, depth_metrics(decoded, depth, align=align, min_depth=min_depth, max_depth=max_depth))
    return pd.DataFrame(rows, columns=["task", "codec", "bits", "metric", "value"])


def query_ceiling(samples: Sequence[Mapping], bits: Sequence[int | None] = (None, 8), noise_std: float = 0.0,
                  seed: int = 0):
    """:func:`codec_ceiling` for the query tasks: each sample (a world row: ``semantic``,
    ``instance``, ``objects``) asked its evaluation queries
    (:func:`banana.evaluation.prompted.evaluation_queries` of ``seed``), the exact answer encoded,
    optionally noised (``noise_std``), quantised to ``bits`` and decoded, then scored as a model
    would be (:func:`~banana.evaluation.prompted.score_query_task`). Same tidy frame."""
    import pandas as pd
    import torch

    from banana.codecs import quantize
    from banana.evaluation.prompted import evaluation_queries, score_query_task
    from banana.tasks import decode_prediction, encode_target, query_target

    samples = list(samples)
    queries = evaluation_queries(samples, len(samples), seed)
    generator = torch.Generator().manual_seed(seed)
    codecs = {"instance": ("instance colours, clustering", ("pq", "precision", "recall")),
              "referring": ("white on black, nearest colour", ("miou", "ciou", "precision@0.9"))}
    rows = []
    for task, (codec, names) in codecs.items():
        asked = list(zip(queries[task]["rows"], queries[task]["queries"]))
        truth = np.stack([query_target(task, samples[r], q) for r, q in asked])
        rgb = np.stack([encode_target(task, samples[r], query=q) for r, q in asked])
        for b in bits:
            picture = rgb
            if noise_std > 0:
                noise = torch.randn(rgb.shape, generator=generator).numpy() * noise_std
                picture = np.clip(rgb + noise.astype(rgb.dtype), 0.0, 1.0)
            picture = picture if b is None else quantize(picture, bits=b)
            scores = score_query_task(task, decode_prediction(task, picture), truth)
            rows += [{"task": task, "codec": codec, "bits": "float" if b is None else str(b), "metric": name,
                      "value": float(scores[name])} for name in names]
    return pd.DataFrame(rows)


def ceiling_table(frame, metrics: Mapping[str, Sequence[str]] | None = None):
    """Pivot :func:`codec_ceiling`'s tidy frame to one row per (task, codec, metric) and one
    column per precision (``float``, ``8``, ...), keeping the metrics named in ``metrics``."""
    metrics = metrics or {"segmentation": ("miou", "rejected_fraction"),
                          "depth": ("abs_rel", "rmse", "delta1"),
                          "normals": ("mean", "median", "within_11.25"),
                          "instance": ("pq",), "referring": ("miou", "ciou")}
    keep = np.zeros(len(frame), dtype=bool)
    for task, names in metrics.items():
        keep |= (frame["task"] == task).to_numpy() & frame["metric"].isin(names).to_numpy()
    return frame[keep].pivot_table(index=["task", "codec", "metric"], columns="bits", values="value",
                                   sort=False)


def ceiling_reading(frame) -> str:
    """What a :func:`codec_ceiling` run found, as Markdown computed from its tidy frame (every
    precision it holds: ``float``, ``8``, ``8 + noise ...``), so a notebook's words cannot disagree
    with its table: whether segmentation survives exactly, how much AbsRel each metric depth
    codec loses in 8 bits against the cube walk, and the normals' angle lost."""
    value = frame.set_index(["task", "codec", "bits", "metric"])["value"]
    precisions = [b for b in dict.fromkeys(frame["bits"]) if b != "float"]
    lines = []
    seg = frame[frame["task"] == "segmentation"]
    for codec in dict.fromkeys(seg["codec"]):
        parts = [f"{b}: mIoU {value[('segmentation', codec, b, 'miou')]:.4f}, "
                 f"{value[('segmentation', codec, b, 'rejected_fraction')]:.2%} rejected" for b in precisions]
        exact = all(value[("segmentation", codec, b, "miou")] == 1.0 for b in precisions)
        lines.append(f"- **Segmentation** ({codec}): {'; '.join(parts)}; "
                     + ("**lossless** at every precision tried." if exact else "**not lossless**: colours are lost."))
    depth = frame[(frame["task"] == "depth") & (frame["metric"] == "abs_rel")]
    reference = DEFAULT_DEPTH_VARIANTS[0][0]
    for b in precisions:
        ref = value.get(("depth", reference, b, "abs_rel"))
        others = [f"{c} {value[('depth', c, b, 'abs_rel')]:.4f}"
                  + (f" ({value[('depth', c, b, 'abs_rel')] / ref:.1f}x)" if ref else "")
                  for c in dict.fromkeys(depth["codec"]) if c != reference and "affine" not in c]
        if ref is not None:
            lines.append(f"- **Metric depth**, {b}: AbsRel of the {reference} {ref:.4f}; " + ", ".join(others)
                         + " (affine codecs are scored after alignment and are not comparable).")
    normal_codecs = frame.loc[frame["task"] == "normals", "codec"]
    for b in precisions if len(normal_codecs) else ():
        key = ("normals", normal_codecs.iloc[0], b, "mean")
        if key in value:
            lines.append(f"- **Normals**, {b}: mean angle lost {value[key]:.2f} deg.")
    for task, metric, label in (("instance", "pq", "PQ"), ("referring", "miou", "mIoU")):
        rows = frame[(frame["task"] == task) & (frame["metric"] == metric)]
        if len(rows):
            codec = rows["codec"].iloc[0]
            parts = [f"{b}: {label} {value[(task, codec, b, metric)]:.4f}" for b in precisions]
            exact = all(value[(task, codec, b, metric)] == 1.0 for b in precisions)
            lines.append(f"- **{task.capitalize()}** ({codec}): {'; '.join(parts)}; "
                         + ("**lossless** at every precision tried." if exact else "**not lossless**."))
    return "\n".join(lines) + "\n"


def vae_codec_ceiling(vae, semantic: np.ndarray, depth: np.ndarray, normals: np.ndarray,
                      palette: Mapping[str, tuple[int, int, int]],
                      depth_variants: Sequence[tuple[str, dict, str]] = DEFAULT_DEPTH_VARIANTS,
                      batch_size: int = 16, device=None, depth_range: tuple[float, float] | None = None):
    """The codec ceiling of a *latent* generator: what a perfect latent model could score.

    A latent generator never emits pixels: its answer is a latent that the VAE decodes. So even a
    perfect one scores ground truth -> codec encode -> 8-bit -> **VAE encode -> VAE decode** ->
    8-bit -> codec decode -> metric. This measures that chain for segmentation (mIoU), every depth
    codec of ``depth_variants`` (AbsRel, delta1, ...) and normals (angular errors), next to the
    plain 8-bit ceiling of :func:`codec_ceiling` (rows with ``bits == "8"``; the VAE rows have
    ``bits == "8 + vae"``).

    Args:
        vae: a diffusers ``AutoencoderKL``, a :class:`~banana.models.latent.LatentGenerator` (its
            ``to_model_space`` / ``to_image_space`` are used), or a directory: a VAE folder or an
            SD-family checkpoint holding ``vae/`` (:func:`banana.models.latent.load_vae`).
        semantic, depth, normals, palette: as in :func:`codec_ceiling`. ``H`` and ``W`` must be
            multiples of the VAE's downsampling factor (8 for SD).
        batch_size: images per VAE call. device: default the VAE's.

    Encoding uses the posterior mean (deterministic), latents are scaled by the VAE's
    ``scaling_factor`` and back (as a latent generator does), decoded images are clamped to
    [-1, 1]. Returns a tidy ``pandas.DataFrame``: ``task, codec, bits, metric, value``.
    """
    import pandas as pd
    import torch

    from banana.codecs import DepthCodec, NormalsCodec, SegmentationCodec, quantize
    from banana.evaluation.metrics import depth_metrics, mean_iou, normal_metrics

    semantic, depth, normals = np.asarray(semantic), np.asarray(depth), np.asarray(normals)
    if semantic.ndim != 3 or depth.shape != semantic.shape or normals.shape != (
            semantic.shape[0], 3, *semantic.shape[1:]):
        raise ValueError("vae_codec_ceiling expects semantic [N,H,W], depth [N,H,W] and normals [N,3,H,W]; "
                         f"got {semantic.shape}, {depth.shape}, {normals.shape}")
    if isinstance(vae, (str, bytes)) or hasattr(vae, "__fspath__"):
        from banana.models.latent import load_vae

        vae = load_vae(vae)
    if hasattr(vae, "to_model_space"):                       # a LatentGenerator
        encode, decode, module = vae.to_model_space, vae.to_image_space, vae.vae
    else:                                                    # an AutoencoderKL
        module = vae
        scale = float(vae.config.scaling_factor)
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        encode = lambda x: (vae.encode(x).latent_dist.mean - shift) * scale          # noqa: E731
        decode = lambda z: vae.decode(z / scale + shift).sample                      # noqa: E731
    factor = 2 ** (len(module.config.block_out_channels) - 1)
    if semantic.shape[1] % factor or semantic.shape[2] % factor:
        raise ValueError(f"images of {semantic.shape[1]}x{semantic.shape[2]} px do not divide into the VAE's "
                         f"{factor}x downsampling")
    parameter = next(module.parameters())
    device = torch.device(device) if device is not None else parameter.device
    was_training = module.training
    module.eval()

    from banana.models.images import from_model_range, to_model_range

    def through_vae(rgb: np.ndarray) -> np.ndarray:
        """8-bit RGB [N, 3, H, W] in [0, 1] -> VAE round trip -> 8-bit RGB."""
        out = []
        with torch.no_grad():
            for lo in range(0, len(rgb), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(rgb[lo:lo + batch_size])).to(device, parameter.dtype)
                y = decode(encode(to_model_range(x))).clamp(-1.0, 1.0)
                out.append(from_model_range(y).cpu().numpy())
        return quantize(np.concatenate(out).astype(np.float32), bits=8)

    rows: list[dict] = []

    def add(task: str, codec: str, bits: str, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"task": task, "codec": codec, "bits": bits, "metric": name, "value": float(value)})

    min_depth, max_depth = _depth_range(depth_range)
    try:
        seg = SegmentationCodec(dict(palette))
        normal_codec = NormalsCodec()
        images = {"segmentation": quantize(seg.encode(semantic.astype(np.int64)).astype(np.float32), bits=8),
                  "normals": quantize(normal_codec.encode(normals.astype(np.float32)), bits=8)}
        for label, kwargs, _ in depth_variants:
            images[label] = quantize(DepthCodec(**kwargs).encode(depth.astype(np.float32)), bits=8)
        for bits, transform in (("8", lambda rgb: rgb), ("8 + vae", through_vae)):
            scores = mean_iou(seg.decode(transform(images["segmentation"])), semantic, seg.num_classes,
                              ignore_index=seg.ignore_index, class_names=seg.class_names)
            add("segmentation", "palette, nearest colour", bits,
                {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
                 "rejected_fraction": scores["rejected_fraction"]})
            add("normals", "(1-x, 1+y, 1+z)/2", bits,
                normal_metrics(normal_codec.decode(transform(images["normals"])), normals))
            for label, kwargs, align in depth_variants:
                decoded = DepthCodec(**kwargs).decode(transform(images[label]))
                add("depth", label, bits, depth_metrics(decoded, depth, align=align, min_depth=min_depth,
                                                        max_depth=max_depth))
    finally:
        module.train(was_training)
    return pd.DataFrame(rows, columns=["task", "codec", "bits", "metric", "value"])
