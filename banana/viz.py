"""Pictures of samples and codecs, shared by the notebooks and the command line.

The task-as-image idea makes visualisation free: the codec's RGB encoding of a target *is*
its picture. So every panel here is drawn by a codec, which also means a picture that
looks wrong points at a codec or label bug.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from banana.style import MIN_FONT_PT, pixel_key

PANELS = ("image", "depth", "normals", "semantic")


def to_hwc(rgb_chw: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` (uint8 or float in [0, 1]) -> ``[H, W, 3]`` float for ``imshow``."""
    rgb = np.asarray(rgb_chw)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected an RGB image [3, H, W], got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    return np.clip(np.moveaxis(rgb, 0, -1), 0.0, 1.0)


def sample_panels(sample: Mapping[str, np.ndarray], palette: Mapping[str, tuple[int, int, int]],
                  panels: Sequence[str] = PANELS) -> dict[str, np.ndarray]:
    """Each requested field of a world sample rendered to an ``[H, W, 3]`` picture by its codec."""
    from banana.codecs import DepthCodec, NormalsCodec, SegmentationCodec

    drawers = {
        "image": lambda s: to_hwc(s["image"]),
        "depth": lambda s: to_hwc(DepthCodec().encode(np.asarray(s["depth"], dtype=np.float32))),
        "normals": lambda s: to_hwc(NormalsCodec().encode(np.asarray(s["normals"], dtype=np.float32))),
        "semantic": lambda s: to_hwc(SegmentationCodec(dict(palette)).encode(np.asarray(s["semantic"]).astype(np.int64))),
    }
    unknown = set(panels) - set(drawers)
    if unknown:
        raise ValueError(f"unknown panels {sorted(unknown)}; choose from {sorted(drawers)}")
    return {name: drawers[name](sample) for name in panels}


def show_samples(samples: Sequence[Mapping[str, np.ndarray]], palette: Mapping[str, tuple[int, int, int]],
                 panels: Sequence[str] = PANELS, titles: bool = True, size: float = 2.0):
    """A grid with one row per sample and one column per panel; returns the figure."""
    import matplotlib.pyplot as plt

    if len(samples) == 0:
        raise ValueError("show_samples needs at least one sample")
    fig, axes = plt.subplots(len(samples), len(panels), figsize=(size * len(panels), size * len(samples) + 0.5),
                             squeeze=False, layout="constrained")
    for row, sample in enumerate(samples):
        for col, (name, picture) in enumerate(sample_panels(sample, palette, panels).items()):
            ax = axes[row, col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if titles and row == 0:
                ax.set_title(name, fontsize=MIN_FONT_PT + 1)
    if "depth" in panels:
        pixel_key(fig, which=("white",))
    return fig


def palette_legend(palette: Mapping[str, tuple[int, int, int]], ax=None):
    """Swatches of a segmentation palette with class names (for figures and notebooks)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * len(palette), 0.9))
    for i, (name, rgb) in enumerate(palette.items()):
        ax.add_patch(plt.Rectangle((i, 0), 0.9, 1, color=np.asarray(rgb) / 255.0))
        ax.text(i + 0.45, -0.15, name, ha="center", va="top", fontsize=MIN_FONT_PT)
    ax.set_xlim(-0.1, len(palette)), ax.set_ylim(-0.6, 1.05)
    ax.axis("off")
    return ax


def show_predictions(images: np.ndarray, targets: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                     size: float = 1.8):
    """Input | (ground truth, prediction) per task, one row per image. ``targets`` and
    ``predictions`` map a task name to RGB pictures ``[B, 3, H, W]`` (codec encodings)."""
    import matplotlib.pyplot as plt

    tasks = list(targets)
    columns = 1 + 2 * len(tasks)
    fig, axes = plt.subplots(len(images), columns, figsize=(size * columns, size * len(images) + 0.8), squeeze=False,
                             layout="constrained")
    for row, image in enumerate(images):
        pictures = [("input", image)] + [pair for task in tasks for pair in
                                         ((f"{task}\nground truth", targets[task][row]),
                                          (f"{task}\ngenerated", predictions[task][row]))]
        for col, (title, picture) in enumerate(pictures):
            ax = axes[row, col]
            ax.imshow(to_hwc(np.asarray(picture)), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=MIN_FONT_PT)
    pixel_key(fig)
    return fig


def show_generations(images: np.ndarray, prompts: Sequence[str], columns: int = 4, size: float = 2.4,
                     width: int = 30):
    """Generated images ``[B, 3, H, W]`` with their whole prompts as titles, wrapped at ``width``
    characters; each row is as tall as its longest prompt needs (a palette prompt is never cut)."""
    import textwrap

    import matplotlib.pyplot as plt

    wrapped = [textwrap.fill(prompt, width) for prompt in prompts]
    rows = (len(images) + columns - 1) // columns
    lines = [max(t.count("\n") + 1 for t in wrapped[r * columns:(r + 1) * columns]) for r in range(rows)]
    heights = [size + 0.2 * n for n in lines]             # a 10-pt line and its spacing: about 0.2 inch
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, sum(heights)), squeeze=False,
                             layout="constrained", gridspec_kw={"height_ratios": heights})
    fig.get_layout_engine().set(h_pad=0.08)               # room above the top row's titles at any dpi
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, wrapped):
        ax.imshow(to_hwc(np.asarray(image)), interpolation="nearest")
        ax.set_title(title, fontsize=MIN_FONT_PT)
    return fig


def show_columns(images: np.ndarray, columns: Mapping[str, np.ndarray], size: float = 1.8):
    """Input images, then one column per entry of ``columns`` (title -> RGB ``[B, 3, H, W]``)."""
    import matplotlib.pyplot as plt

    titles = ["input", *columns]
    fig, axes = plt.subplots(len(images), len(titles), figsize=(size * len(titles), size * len(images) + 0.8),
                             squeeze=False, layout="constrained")
    for row, image in enumerate(images):
        for col, picture in enumerate([image, *(c[row] for c in columns.values())]):
            ax = axes[row, col]
            ax.imshow(to_hwc(np.asarray(picture)), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=MIN_FONT_PT)
    pixel_key(fig)
    return fig


def draw_generator_architecture(config, ax=None):
    """The pixel generator as a block diagram, drawn from its ``GeneratorConfig``: the noisy target
    and the condition image concatenated into 6 input channels, the UNet's levels (width, and
    whether they cross-attend to the instruction), the instruction encoder feeding every attention
    level, and the 3-channel output (x0, the answer picture). Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if ax is None:
        fig, ax = plt.subplots(figsize=(12.8, 7.2))
    fig = ax.figure
    ax.set_xlim(0, 16), ax.set_ylim(0, 7), ax.axis("off")

    def box(x, y, w, h, text, color, size=10):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", facecolor=color, edgecolor="0.3"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(a, b, **kw):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, color="0.25", **kw))

    r = config.resolution
    box(0.2, 4.6, 2.4, 1.0, f"noisy target x_t\n3 × {r} × {r}", "#fde2b8")
    box(0.2, 3.0, 2.4, 1.2, f"condition image\n3 × {r} × {r}\n(zeros for generation)", "#cfe8cf")
    box(3.2, 3.6, 1.4, 1.5, "concat\n6 channels", "#eeeeee")
    arrow((2.6, 5.1), (3.2, 4.6)), arrow((2.6, 3.6), (3.2, 4.1))
    levels = list(enumerate(zip(config.block_out_channels, config.cross_attention_levels)))
    path = [("down", *lv) for lv in levels] + [("up", *lv) for lv in levels[-2::-1]]   # the U, left to right
    x, width = 5.0, 9.0 / len(path)
    previous = (4.6, 4.35)
    for direction, level, (channels, attends) in path:
        y = 5.0 - 0.9 * level
        label = f"{direction} {level}\n{channels} ch, {r // 2 ** level} px" + ("\n+ cross-attn" if attends else "")
        box(x, y - 0.45, width * 0.92, 1.1, label, "#d7e3fc" if attends else "#e8eef9", size=MIN_FONT_PT)
        arrow(previous, (x, y + 0.1))
        previous = (x + width * 0.92, y + 0.1)
        if attends:                                # the instruction enters every attention level
            arrow((x + width * 0.45, 1.6), (x + width * 0.45, y - 0.45), linestyle="--")
        x += width
    box(x + 0.2, 3.8, 1.7, 1.1, f"x0 (answer)\n3 × {r} × {r}", "#fde2b8")
    arrow(previous, (x + 0.2, 4.35))
    box(5.0, 0.4, 7.0, 1.2, f"instruction encoder: {config.text_layers}-layer transformer, width {config.text_dim}, "
                            f"≤ {config.max_tokens} tokens\n(prompt: a description, or a task with its palette)",
        "#f3d9f7")
    ax.text(0.2, 6.5, f"banana generator (diffusers UNet2DConditionModel; prediction: {config.prediction_type}, "
                      f"{config.num_train_timesteps} timesteps, {config.timestep_spacing} spacing)", fontsize=11)
    return fig


def codec_drift_figure(scene: Mapping[str, np.ndarray], noise_std: float = 0.02, drift: float = 0.0, seed: int = 0):
    """What a generator's colour errors do to the answer: the scene's segmentation and depth
    targets encoded, shifted by ``drift`` (every channel) plus Gaussian noise ``noise_std``,
    stored in 8 bits and decoded. Rejected segmentation pixels show black, infinite depth white;
    the titles give the exact / rejected pixel shares and the depth AbsRel. Returns the figure."""
    import matplotlib.pyplot as plt

    from banana.codecs import DepthCodec, SegmentationCodec, quantize
    from banana.style import slide_size
    from banana.world import CANONICAL_PALETTE

    rng = np.random.default_rng(seed)
    segmentation, depth_codec = SegmentationCodec(dict(CANONICAL_PALETTE)), DepthCodec()
    labels, depth = np.asarray(scene["semantic"]).astype(np.int64), np.asarray(scene["depth"], np.float32)
    fig, axes = plt.subplots(2, 3, figsize=slide_size(10), layout="constrained")
    for row, (task, codec, target) in enumerate((("segmentation", segmentation, labels), ("depth", depth_codec, depth))):
        painted = codec.encode(target)
        drifted = quantize(np.clip(painted + drift + rng.normal(0, noise_std, painted.shape), 0, 1).astype(np.float32))
        decoded = codec.decode(drifted)
        if task == "segmentation":
            note = f"{(decoded == labels).mean():.1%} exact, {(decoded == segmentation.ignore_index).mean():.1%} rejected"
        else:
            finite = np.isfinite(depth) & np.isfinite(decoded)
            note = f"AbsRel {np.mean(np.abs(decoded[finite] - depth[finite]) / depth[finite]):.4f}"
        for ax, picture, title in zip(axes[row], (painted, drifted, codec.encode(decoded)),
                                      (f"{task} target", f"+ drift {drift:+.2f}, noise σ {noise_std:.2f}",
                                       f"decoded: {note}")):
            ax.imshow(to_hwc(picture), interpolation="nearest")
            ax.set_title(title, fontsize=MIN_FONT_PT + 1)
            ax.axis("off")
    pixel_key(fig)
    return fig


def codec_drift_explorer(scene: Mapping[str, np.ndarray], noise_std: float = 0.02, drift: float = 0.0,
                         seed: int = 0):
    """:func:`codec_drift_figure` shown now (a static image: what an executed notebook keeps) and two
    sliders (returned, ``ipywidgets``) that redraw it in place when a live front end moves them.
    No ``Output`` widget and no ``interact``: nbclient (papermill) hangs on those without a front end."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import DisplayHandle

    def figure(noise, shift):
        fig = codec_drift_figure(scene, noise_std=noise, drift=shift, seed=seed)
        plt.close(fig)                    # shown through the display handle only, never twice
        return fig

    handle = DisplayHandle()
    handle.display(figure(noise_std, drift))
    sliders = [widgets.FloatSlider(noise_std, min=0.0, max=0.3, step=0.01, description="noise σ",
                                   continuous_update=False),
               widgets.FloatSlider(drift, min=-0.3, max=0.3, step=0.01, description="drift", continuous_update=False)]
    for slider in sliders:
        slider.observe(lambda _: handle.update(figure(sliders[0].value, sliders[1].value)), names="value")
    return widgets.HBox(sliders)
