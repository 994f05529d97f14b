"""Generation retention: does the tuned model still draw what it is asked to draw?

Vision Banana's claim has two halves: the tuned model beats specialists *and* keeps generating
as well as its base (the paper: human win rates of about 50% against the base). Human raters
are not available here, so retention is measured two ways, both on held-out world prompts and
always for the base and the tuned model side by side:

(a) :func:`denoising_loss` - the training objective itself on held-out images and their
    descriptions, at fixed timesteps with fixed noise. The noise depends only on ``seed`` and the
    image shape, so both models are asked exactly the same questions and the difference is the
    models' alone. It is cheap and sensitive, but it scores one denoising step, not a drawn image.
(b) :func:`prompt_adherence` - GenEval-style: draw an image from each description, segment it
    with an independent segmenter, and check per named object that its shape class is present and
    that the pixels of that class have the named colour. It scores what a user sees, at the price
    of depending on the segmenter (use the same one for both models).

Colour rule (why not "median colour within a distance"): world images are Lambert-shaded, so an
object's pixels are its albedo times a shading factor between the ambient light (0.2-0.35 in the
world) and 1. On the ``cpu`` world's ground-truth renders, "median pixel colour nearest to the
named colour" is right for only ~23% of objects. Instead each pixel of the class gets the
vocabulary colour whose *shading ray* ``{s * rgb : s in [SHADING_FLOOR, 1]}`` passes closest to it,
and a named object (shape ``S``, colour ``c``) is colour-correct when the pixels named ``c`` make up
at least ``color_share / k`` of the class-``S`` pixels, ``k`` = how many objects of shape ``S`` the
prompt names (two same-shape objects share the class's pixels; labels carry no instances). With
the default ``color_share = 0.25``, on ground-truth images and labels of the ``cpu`` world this
accepts 97% (test) / 96% (held_out) of true colours and 2% of wrong vocabulary colours.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["denoising_loss", "retention_increase", "prompt_adherence", "score_adherence", "adherence_inputs", "retention_report",
           "PipelineSegmenter", "DEFAULT_TIMESTEPS", "SHADING_FLOOR"]

#: Fixed timesteps of :func:`denoising_loss` (of the 1000 training timesteps): low to high noise.
DEFAULT_TIMESTEPS: tuple[int, ...] = (100, 300, 500, 700, 900)
#: The darkest shading factor the colour rule allows (the world's smallest ambient light).
SHADING_FLOOR = 0.2


# --------------------------------------------------------------------------- (a) denoising loss
def denoising_loss(generator, split, timesteps: Sequence[int] = DEFAULT_TIMESTEPS, n: int = 64, seed: int = 0,
                   batch_size: int = 16) -> dict:
    """Text -> image denoising loss of ``generator`` on the first ``n`` rows of a world ``split``.

    Each row is the training's generation example (target = the image in [-1, 1], condition =
    zeros, prompt = its description; :meth:`BananaExamples.generation` without dropout), noised
    at every timestep in ``timesteps`` with noise drawn from ``torch.Generator().manual_seed(seed)``
    (one ``[T, n, 3, H, W]`` draw on the CPU: identical for every model and device). The loss is the
    training loss: per-example MSE between the model output and its prediction target.

    Returns ``{"mean", "per_timestep": {t: mean}, "per_example": [T][n], "timesteps", "n", "seed",
    "prediction_type"}``. Lower is better; compare models only at equal prediction type.
    """
    from banana.models import build_noise_scheduler
    from banana.training.data import BananaExamples, collate_examples
    from banana.training.module import prediction_target

    timesteps = [int(t) for t in timesteps]
    num_train = generator.config.num_train_timesteps
    if not timesteps or min(timesteps) < 0 or max(timesteps) >= num_train:
        raise ValueError(f"timesteps must be a non-empty list in [0, {num_train}), got {timesteps}")
    n = min(int(n), len(split))
    if n < 1:
        raise ValueError("denoising_loss needs at least one example")
    examples = BananaExamples(split.select(range(n)), seed=seed, drop_text_prob=0.0, drop_image_prob=0.0, drop_both_prob=0.0)
    scheduler = build_noise_scheduler(generator.config)
    device = generator.device
    # noise in model space: [T, n, 3, H, W] for pixel generators, [T, n, C, h, w] for latent ones
    noise = torch.randn((len(timesteps), *generator.sample_shape(n)), generator=torch.Generator().manual_seed(seed))
    losses = torch.zeros(len(timesteps), n, dtype=torch.float64)
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            for lo in range(0, n, batch_size):
                hi = min(n, lo + batch_size)
                batch = collate_examples([examples.generation(i) for i in range(lo, hi)])
                x0 = generator.to_model_space(batch["target"].to(device))
                condition = generator.to_model_space(batch["condition"].to(device))
                states, mask = generator.encode_prompts(batch["prompt"])
                for j, t in enumerate(timesteps):
                    eps = noise[j, lo:hi].to(device)
                    ts = torch.full((hi - lo,), t, dtype=torch.long, device=device)
                    output = generator(scheduler.add_noise(x0, eps, ts), ts, condition, states, mask)
                    wanted = prediction_target(scheduler, x0, eps, ts)
                    losses[j, lo:hi] = (output.float() - wanted.float()).pow(2).mean(dim=(1, 2, 3)).double().cpu()
    finally:
        generator.train(was_training)
    return {"mean": float(losses.mean()), "per_timestep": {str(t): float(row.mean()) for t, row in zip(timesteps, losses)},
            "per_example": losses.tolist(), "timesteps": timesteps, "n": n, "seed": seed,
            "prediction_type": scheduler.config.prediction_type}


def retention_increase(base, tuned, split, n: int = 64, seed: int = 0) -> dict[str, float]:
    """How much worse ``tuned`` denoises held-out generation examples than ``base``: the increase
    of :func:`denoising_loss` in percent, with its 95% paired bootstrap interval over the scenes
    (both models see the same scenes, timesteps and noise; a scene's losses move together).

    Returns ``{"denoising_loss_base", "denoising_loss_tuned", "denoising_loss_increase_pct",
    "denoising_loss_increase_pct_ci_lo", "denoising_loss_increase_pct_ci_hi", "n_retention"}``;
    an interval that contains 0 means "within noise of the base"."""
    from banana.evaluation.uncertainty import ImageStatistic, bootstrap_interval

    per_scene = [np.asarray(denoising_loss(model, split, n=n, seed=seed)["per_example"]).mean(axis=0)
                 for model in (base, tuned)]
    stat = ImageStatistic(np.stack([per_scene[1], per_scene[0]], axis=1),
                          lambda summed: 100.0 * (summed[:, 0] / summed[:, 1] - 1.0))
    lo, hi = bootstrap_interval(stat)
    return {"denoising_loss_base": float(per_scene[0].mean()), "denoising_loss_tuned": float(per_scene[1].mean()),
            "denoising_loss_increase_pct": stat.value(), "denoising_loss_increase_pct_ci_lo": lo,
            "denoising_loss_increase_pct_ci_hi": hi, "n_retention": int(len(per_scene[0]))}


def pretraining_reading(pretrained, split, n: int = 64, seed: int = 0) -> str:
    """What pretraining bought, as Markdown computed here: :func:`denoising_loss` of ``pretrained``
    on the first ``n`` scenes of ``split`` against the same network freshly initialised with
    ``seed`` (same scenes, timesteps and noise), with the 95% paired bootstrap interval of the
    change. An interval that contains 0 means pretraining learned nothing measurable."""
    import torch

    torch.manual_seed(seed)
    untrained = type(pretrained)(pretrained.config)
    r = retention_increase(untrained, pretrained, split, n=n, seed=seed)
    lo, hi = r["denoising_loss_increase_pct_ci_lo"], r["denoising_loss_increase_pct_ci_hi"]
    verdict = ("**lower than untrained**: it learned the images" if hi < 0 else
               "**higher than untrained**: something is wrong" if lo > 0 else "within noise of untrained: no finding")
    return (f"- Denoising loss on {r['n_retention']} held-out scenes (text -> image, every scored timestep): "
            f"pretrained {r['denoising_loss_tuned']:.4f}, untrained {r['denoising_loss_base']:.4f}; change "
            f"{r['denoising_loss_increase_pct']:+.1f}% [{lo:+.1f}, {hi:+.1f}], {verdict}.\n")


# --------------------------------------------------------------------------- (b) prompt adherence
class PipelineSegmenter:
    """Use a :class:`~banana.pipeline.BananaPipeline` as a segmenter (``.predict(images) ->
    labels``): the canonical-palette segmentation prompt, decoded; ``sampling`` as in
    ``pipe.predict`` (a fixed ``seed`` makes it deterministic)."""

    def __init__(self, pipe, seed: int = 0, **sampling):
        self.pipe, self.seed, self.sampling = pipe, seed, sampling

    def predict(self, images) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return self.pipe.predict(images, "segmentation", generator=generator, **self.sampling)["prediction"]


def adherence_inputs(split, limit: int | None = None) -> tuple[list[str], list[list[dict]]]:
    """The first ``limit`` rows' descriptions (the prompts) and object records (parsed ``objects``
    JSON: ``shape``, ``color_name``, ... per named object)."""
    n = len(split) if limit is None else min(limit, len(split))
    rows = split[0:n]
    return [str(d) for d in rows["description"]], [json.loads(str(o)) for o in rows["objects"]]


def _vocabulary() -> tuple[list[str], np.ndarray]:
    from banana.world import COLOR_VOCABULARY

    return list(COLOR_VOCABULARY), np.asarray(list(COLOR_VOCABULARY.values()), dtype=np.float64)


def _pixel_colour_names(pixels: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    """Index of the vocabulary colour whose shading ray passes closest to each pixel ``[N, 3]``."""
    scale = np.clip(pixels @ vocab.T / (vocab ** 2).sum(1), SHADING_FLOOR, 1.0)            # [N, V]
    distance = np.linalg.norm(pixels[:, None, :] - scale[..., None] * vocab[None], axis=-1)
    return distance.argmin(1)


def score_adherence(image: np.ndarray, labels: np.ndarray, objects: Sequence[Mapping[str, Any]],
                    color_share: float = 0.25, min_pixels: int = 1) -> dict:
    """Score one generated image against the objects its prompt named.

    Args:
        image: uint8 (0..255) or float ``[3, H, W]`` RGB (floats in [0, 1]).
        labels: class ids ``[H, W]`` of :data:`banana.world.CLASS_NAMES` (from a segmenter).
        objects: records with ``shape`` and ``color_name``.
        color_share, min_pixels: the rule of the module docstring; a shape is present with at
            least ``min_pixels`` pixels.

    Returns ``{"objects": [{shape, color, pixels, present, color_share, color_correct}],
    "presence", "color" (fractions of objects), "all_present", "correct" (every object present
    and colour-correct)}``.
    """
    from banana.world import CLASS_IDS

    image = np.asarray(image)
    image = image.astype(np.float64) if image.dtype == np.uint8 else np.asarray(image, np.float64) * 255.0
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[0] != 3 or labels.shape != image.shape[1:]:
        raise ValueError(f"need image [3, H, W] and labels [H, W], got {image.shape} and {labels.shape}")
    names, vocab = _vocabulary()
    counts: dict[str, int] = {}
    for o in objects:
        counts[o["shape"]] = counts.get(o["shape"], 0) + 1
    named: dict[str, np.ndarray] = {}
    scored = []
    for o in objects:
        shape, colour = o["shape"], o["color_name"]
        mask = labels == CLASS_IDS[shape]
        pixels = int(mask.sum())
        if shape not in named:
            named[shape] = _pixel_colour_names(image[:, mask].T, vocab) if pixels else np.zeros(0, np.int64)
        share = float((named[shape] == names.index(colour)).mean()) if pixels else 0.0
        present = pixels >= min_pixels
        scored.append({"shape": shape, "color": colour, "pixels": pixels, "present": bool(present),
                       "color_share": share, "color_correct": bool(present and share >= color_share / counts[shape])})
    k = max(1, len(scored))
    return {"objects": scored, "presence": sum(o["present"] for o in scored) / k,
            "color": sum(o["color_correct"] for o in scored) / k,
            "all_present": all(o["present"] for o in scored),
            "correct": all(o["present"] and o["color_correct"] for o in scored)}


def _aggregate(records: Sequence[Mapping]) -> dict[str, float]:
    objects = [o for r in records for o in r["objects"]]
    mean = lambda xs: float(np.mean(xs)) if len(xs) else float("nan")
    return {"object_presence": mean([o["present"] for o in objects]),
            "object_color": mean([o["color_correct"] for o in objects]),
            "prompt_presence": mean([r["all_present"] for r in records]),
            "prompt_correct": mean([r["correct"] for r in records]),
            "n_prompts": len(records), "n_objects": len(objects)}


def prompt_adherence(pipe, prompts: Sequence[str], objects: Sequence[Sequence[Mapping[str, Any]]], segmenter, *,
                     seed: int = 0, batch_size: int = 16, color_share: float = 0.25, min_pixels: int = 1,
                     return_images: bool = False, **sampling) -> dict:
    """Generate one image per prompt, segment it, score the named objects (:func:`score_adherence`).

    Args:
        pipe: anything with ``generate(prompts, generator=..., **sampling) -> [B, 3, H, W]`` in
            [0, 1] (a :class:`~banana.pipeline.BananaPipeline`).
        prompts, objects: one description and its object records per image
            (:func:`adherence_inputs`).
        segmenter: anything with ``predict(images) -> labels [B, H, W]``; it receives the images
            as 8-bit ``uint8 [B, 3, H, W]`` numpy, as if saved to PNG (e.g. a specialist, or
            :class:`PipelineSegmenter`). Use the same one for every model compared.
        seed: batch ``k`` is drawn with ``torch.Generator().manual_seed(seed + k)``, so two models
            start from the same noise.

    Returns ``{"records": [per prompt: prompt + score_adherence's fields], "aggregate":
    {object_presence, object_color, prompt_presence, prompt_correct, n_prompts, n_objects},
    "seconds_per_image"}`` (generation time only), plus ``"images"`` if ``return_images``.
    """
    prompts = [str(p) for p in prompts]
    if len(prompts) != len(objects) or not prompts:
        raise ValueError(f"need one object list per prompt, got {len(prompts)} prompts and {len(objects)} lists")
    records, images_out, seconds = [], [], 0.0
    for k, lo in enumerate(range(0, len(prompts), batch_size)):
        batch = prompts[lo:lo + batch_size]
        start = time.perf_counter()
        images = pipe.generate(batch, generator=torch.Generator().manual_seed(seed + k), **sampling)
        seconds += time.perf_counter() - start
        images = np.round(np.clip(_numpy(images), 0.0, 1.0) * 255.0).astype(np.uint8)
        labels = _numpy(segmenter.predict(images))
        if labels.shape != (len(batch), *images.shape[2:]):
            raise ValueError(f"the segmenter returned labels of shape {labels.shape} for images {images.shape}")
        for i, prompt in enumerate(batch):
            score = score_adherence(images[i], labels[i], objects[lo + i], color_share, min_pixels)
            records.append({"prompt": prompt, **score})
        if return_images:
            images_out.append(images)
    out = {"records": records, "aggregate": _aggregate(records), "seconds_per_image": seconds / len(prompts)}
    if return_images:
        out["images"] = np.concatenate(images_out)
    return out


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --------------------------------------------------------------------------- both, base vs tuned
def retention_report(base_generator, tuned_generator, split, segmenter, *, n: int = 64,
                     timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0, scheduler: str = "ddim",
                     batch_size: int = 16, **sampling) -> dict:
    """Denoising loss and prompt adherence of a base generator and its tuned version, side by side.

    Both models get the same ``n`` rows of ``split`` (use ``held_out`` or ``test``: prompts the
    generators were not trained on), the same noise (``seed``) and the same ``segmenter``.
    ``sampling`` goes to ``pipe.generate`` (``num_inference_steps``, ``text_guidance``).

    Returns ``{"denoising_loss": {"base", "tuned", "difference" (tuned - base mean; > 0 = worse),
    "difference_ci95"}, "prompt_adherence": {"base", "tuned": prompt_adherence results, "difference":
    per aggregate score (tuned - base; < 0 = worse), "difference_ci95"}, "n", "seed"}``; each
    ``difference_ci95`` is the 95% paired bootstrap interval over the examples / prompts.
    """
    from banana.evaluation.uncertainty import mean_over_images, paired_difference
    from banana.pipeline import BananaPipeline

    if base_generator.config.prediction_type != tuned_generator.config.prediction_type:
        raise ValueError("the two generators predict different targets; their losses are not comparable")
    losses = {name: denoising_loss(g, split, timesteps=timesteps, n=n, seed=seed, batch_size=batch_size)
              for name, g in (("base", base_generator), ("tuned", tuned_generator))}
    prompts, objects = adherence_inputs(split, n)
    adherence = {name: prompt_adherence(BananaPipeline(g, scheduler=scheduler), prompts, objects, segmenter,
                                        seed=seed, batch_size=batch_size, **sampling)
                 for name, g in (("base", base_generator), ("tuned", tuned_generator))}
    scores = ("object_presence", "object_color", "prompt_presence", "prompt_correct")
    # Paired bootstrap over the same examples / prompts (banana.evaluation.uncertainty): how sure is the difference?
    per_example = {name: mean_over_images(np.asarray(losses[name]["per_example"]).mean(axis=0)) for name in losses}
    adherence_stats = {name: _adherence_statistics(adherence[name]["records"]) for name in adherence}
    loss_ci = paired_difference(per_example["tuned"], per_example["base"])[1:]
    adherence_ci = {s: list(paired_difference(adherence_stats["tuned"][s], adherence_stats["base"][s])[1:])
                    for s in scores}
    return {"denoising_loss": {**losses, "difference": losses["tuned"]["mean"] - losses["base"]["mean"],
                               "difference_ci95": list(loss_ci)},
            "prompt_adherence": {**adherence, "difference": {s: adherence["tuned"]["aggregate"][s]
                                                             - adherence["base"]["aggregate"][s] for s in scores},
                                 "difference_ci95": adherence_ci},
            "n": len(prompts), "seed": seed}


def _adherence_statistics(records: Sequence[Mapping]) -> dict:
    """Per-prompt statistics of :func:`_aggregate`'s scores, for bootstrap intervals over prompts."""
    from banana.evaluation.uncertainty import mean_over_images, pooled_ratio

    objects = lambda key: np.asarray([sum(o[key] for o in r["objects"]) for r in records], np.float64)  # noqa: E731
    counts = np.asarray([len(r["objects"]) for r in records], np.float64)
    return {"object_presence": pooled_ratio(objects("present"), counts),
            "object_color": pooled_ratio(objects("color_correct"), counts),
            "prompt_presence": mean_over_images(np.asarray([r["all_present"] for r in records], np.float64)),
            "prompt_correct": mean_over_images(np.asarray([r["correct"] for r in records], np.float64))}
