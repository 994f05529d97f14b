"""The house figure style (banana.style), checked on every figure function banana has: charts are
16:9 with every text at least 10 pt, axes named, legends outside the panels and the best floor a
dashed reference line; picture grids say what white (infinite depth) and black (rejected) mean."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from banana.style import ASPECT, FLOOR_STYLE, MIN_FONT_PT, PIXEL_MEANINGS, panel_layout, slide_size  # noqa: E402

METRICS = ["segmentation_miou", "depth_delta1", "normals_mean_deg"]


def _texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _panels(fig):
    return [ax for ax in fig.axes if ax.axison and (ax.lines or ax.patches or ax.collections)]


def assert_chart_style(fig, floors: bool = True):
    fig.canvas.draw()
    width, height = fig.get_size_inches()
    assert width / height == pytest.approx(ASPECT, rel=0.01), f"not 16:9: {width:.2f} x {height:.2f} in"
    small = [(t.get_text()[:30], t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < MIN_FONT_PT]
    assert not small, f"text under {MIN_FONT_PT} pt: {small}"
    panels = _panels(fig)
    assert panels, "no panel draws data"
    renderer = fig.canvas.get_renderer()
    for ax in panels:
        assert ax.get_title() or ax.get_xlabel(), "a panel without a name"
        assert ax.get_legend() is None, "a legend inside a panel: legends go outside the data"
        if floors:
            dashed = [line for line in ax.lines if line.get_linestyle() == "--"
                      and matplotlib.colors.same_color(line.get_color(), FLOOR_STYLE["color"])]
            assert dashed, f"panel {ax.get_title()!r} has no floor reference line"
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        for ax in panels:
            assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"


def _results() -> pd.DataFrame:
    rows = []
    for ratio in (0.0, 0.5, 1.0):
        for seed in (0, 1):
            row = {"mixing_ratio": ratio, "seed": seed, "status": "done", "tuning": "full"}
            for i, m in enumerate(METRICS):
                value = 0.1 + 0.2 * ratio + 0.01 * seed + i
                row.update({m: value, f"{m}_ci_lo": value - 0.02, f"{m}_ci_hi": value + 0.02, f"{m}_floor": i + 0.05})
            rows.append(row)
    return pd.DataFrame(rows)


def test_panel_layout_and_slide_size():
    assert slide_size()[0] / slide_size()[1] == pytest.approx(16 / 9)
    for n in range(1, 10):
        rows, cols = panel_layout(n)
        assert rows * cols >= n and (rows - 1) * cols < n
    with pytest.raises(ValueError, match="at least one panel"):
        panel_layout(0)


def test_a_floor_outside_the_data_is_brought_into_view():
    from banana.style import floor_line

    fig, (linear, log) = plt.subplots(1, 2)
    linear.plot([0, 1], [30, 40])
    floor_line(linear, 22.0)                      # normals: every model above the floor's angle
    lo, hi = linear.get_ylim()
    assert lo + 0.02 * (hi - lo) < 22.0 < hi        # inside the frame, clear of the bottom spine
    log.plot([1, 2], [0.1, 0.2])
    log.set_yscale("log")
    floor_line(log, 0.5)
    assert log.get_ylim()[0] > 0 and log.get_ylim()[1] > 0.5
    plt.close(fig)


def test_grid_results_figure_follows_the_house_style():
    from banana.grid import plot_grid_results

    fig = plot_grid_results(_results(), "mixing_ratio", METRICS, hue="tuning", log_x=True)
    assert_chart_style(fig)
    assert {ax.get_title() for ax in _panels(fig)} >= {"segmentation mIoU (↑)", "normals mean angle, deg (↓)"}
    assert all(ax.get_xlabel() == "vision fraction of the mix" for ax in _panels(fig))
    plt.close(fig)
    with pytest.raises(ValueError, match="none of the metrics"):
        plot_grid_results(_results(), "mixing_ratio", ["no_such_metric"])


@pytest.mark.parametrize("kind", ["line", "scatter"])
def test_grid_report_figures_follow_the_house_style(kind):
    from banana.grid.report import grid_figure

    spec = {"name": "t", "title": "a grid", "x": "mixing_ratio", "hue": "tuning", "kind": kind, "metrics": METRICS}
    fig = grid_figure(_results(), {"axes": {"mixing_ratio": [0, 0.5, 1], "seed": [0, 1]}}, spec)
    assert_chart_style(fig)
    plt.close(fig)


def test_learning_curves_follow_the_house_style():
    from banana.curves import plot_learning_curves

    frame = _results().rename(columns={"mixing_ratio": "labeled_scenes"})
    frame["labeled_scenes"] = frame["labeled_scenes"].map({0.0: 32, 0.5: 64, 1.0: 128})
    frame["arm"] = np.where(frame["seed"] == 0, "generalist-best", "control")
    fig = plot_learning_curves(frame)
    assert_chart_style(fig)
    plt.close(fig)


def test_comparison_figure_names_models_and_draws_the_floor():
    from banana.evaluation.contest import comparison_figure

    rows = []
    for metric, higher in (("segmentation mIoU", True), ("depth AbsRel (metric, clipped)", False)):
        for model, value in (("generalist", 0.5), ("control", 0.4), ("floor: majority", 0.2), ("floor: mean", 0.3)):
            rows.append({"split": "test", "model": model, "metric": metric, "value": value, "ci_lo": value - 0.05,
                         "ci_hi": value + 0.05, "higher_is_better": higher})
    fig = comparison_figure(pd.DataFrame(rows), "test", "a comparison")
    assert_chart_style(fig)
    names = {t.get_text() for ax in _panels(fig) for t in ax.get_yticklabels()}
    assert {"generalist", "control", "floor: majority"} <= names, "model names belong on the axis"
    titles = [ax.get_title() for ax in _panels(fig)]
    assert titles == ["segmentation mIoU (↑)", "depth AbsRel (metric, clipped) (↓)"]
    floor_x = [line.get_xdata()[0] for ax in _panels(fig) for line in ax.lines if line.get_linestyle() == "--"]
    assert floor_x == [0.3, 0.2], "the best floor: the highest where higher is better, else the lowest"
    plt.close(fig)
    with pytest.raises(ValueError, match="no rows for split 'val'"):
        comparison_figure(pd.DataFrame(rows), "val")


def test_loss_curve_is_16_by_9(tmp_path):
    from banana.training import plot_loss_curve

    log = tmp_path / "logs" / "version_0" / "metrics.csv"     # Lightning's CSV logger layout
    log.parent.mkdir(parents=True)
    log.write_text("step,train/loss\n" + "".join(f"{s},{1 / (s + 1)}\n" for s in range(50)))
    path = plot_loss_curve(tmp_path)
    height, width = plt.imread(path).shape[:2]
    assert width / height == pytest.approx(ASPECT, rel=0.02)


def _pictures(n=2, size=8):
    rng = np.random.default_rng(0)
    return rng.random((n, 3, size, size)).astype(np.float32)


def _assert_pictures_keyed(fig, which=("white", "black")):
    fig.canvas.draw()
    small = [(t.get_text()[:30], t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < MIN_FONT_PT]
    assert not small, f"text under {MIN_FONT_PT} pt: {small}"
    keyed = {t.get_text() for legend in fig.legends for t in legend.get_texts()}
    assert {PIXEL_MEANINGS[w][1] for w in which} <= keyed, f"no key for {which}: {keyed}"


def test_picture_grids_carry_the_white_and_black_key():
    from banana.viz import show_columns, show_predictions

    images = _pictures()
    fig = show_predictions(images, {"depth": _pictures()}, {"depth": _pictures()})
    _assert_pictures_keyed(fig)
    fig2 = show_columns(images, {"answer": _pictures()})
    _assert_pictures_keyed(fig2)
    plt.close("all")


def test_world_samples_and_generations_are_readable():
    from banana.viz import show_generations, show_samples
    from banana.world import CANONICAL_PALETTE, render_sample

    fig = show_samples([render_sample(0, "train", 0, resolution=16, spp=1)], CANONICAL_PALETTE)
    _assert_pictures_keyed(fig, which=("white",))
    long_prompt = "Generate a semantic segmentation visualization image, using this color mapping: " * 2
    fig2 = show_generations(_pictures(2), [long_prompt, "a red box"])
    fig2.canvas.draw()
    titles = [ax.get_title() for ax in fig2.axes if ax.get_title()]
    assert titles[0].replace("\n", " ") == long_prompt.strip(), "a prompt is never cut"
    assert min(t.get_fontsize() for t in _texts(fig2)) >= MIN_FONT_PT
    plt.close("all")


def test_architecture_figure_is_a_readable_slide():
    from banana.models import GeneratorConfig
    from banana.viz import draw_generator_architecture

    fig = draw_generator_architecture(GeneratorConfig())
    fig.canvas.draw()
    width, height = fig.get_size_inches()
    assert width / height == pytest.approx(ASPECT, rel=0.01)
    assert min(t.get_fontsize() for t in _texts(fig)) >= MIN_FONT_PT
    plt.close(fig)


@pytest.mark.parametrize("defect", ["aspect", "small text", "legend inside", "no floor"])
def test_the_style_check_rejects_each_defect(defect):
    fig, ax = plt.subplots(figsize=(8, 6) if defect == "aspect" else slide_size(), layout="constrained")
    ax.plot([0, 1], [0, 1], label="model")
    if defect != "no floor":
        ax.axhline(0.5, **FLOOR_STYLE)
    ax.set_title("mIoU (↑)", fontsize=8 if defect == "small text" else 12)
    if defect == "legend inside":
        ax.legend()
    with pytest.raises(AssertionError):
        assert_chart_style(fig)
    plt.close(fig)


def test_codec_drift_figure_shows_rejection_and_the_explorer_redraws(monkeypatch):
    import banana.viz as viz
    from banana.world import render_sample

    scene = render_sample(0, "train", 0, resolution=16, spp=1)
    clean = viz.codec_drift_figure(scene, noise_std=0.0, drift=0.0)
    assert "100.0% exact, 0.0% rejected" in clean.axes[2].get_title()
    assert "AbsRel 0.0" in clean.axes[5].get_title()
    shifted = viz.codec_drift_figure(scene, noise_std=0.0, drift=0.3)
    rejected = float(shifted.axes[2].get_title().split(", ")[1].split("%")[0])
    assert rejected > 0, "a drift past the reject radius must reject pixels"
    _assert_pictures_keyed(shifted)
    drawn = []
    monkeypatch.setattr(viz, "codec_drift_figure", lambda *a, **k: drawn.append(k) or plt.figure())
    box = viz.codec_drift_explorer(scene, noise_std=0.05, seed=0)
    noise, drift = box.children
    drift.value = 0.1                   # what a front end does when the slider moves
    assert [d["drift"] for d in drawn] == [0.0, 0.1] and drawn[-1]["noise_std"] == 0.05
    plt.close("all")
