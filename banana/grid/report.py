"""A grid folder as a report: the tidy tables (``results.csv``, ``results_long.csv``), seaborn
figures and a Markdown summary (mean ± sd over seeds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from banana.style import LABELS as STYLE_LABELS, floor_line, label, panel_layout, slide_size, use_style
from banana.grid.spec import GRID_FILE, METRICS_FILE, STATUS_FILE, point_name, point_status


# --------------------------------------------------------------------------- aggregation
def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def collect(grid_dir: str | Path):
    """A DataFrame with one row per point of a grid folder: the grid's axes, ``status``,
    ``seconds``, then every number in the point's ``metrics.json`` (nested keys joined by ``/``)."""
    import pandas as pd

    grid_dir = Path(grid_dir)
    grid_path = grid_dir / GRID_FILE
    if not grid_path.is_file():
        raise FileNotFoundError(f"{grid_path} does not exist: {grid_dir} is not a grid folder (run `banana grid` first)")
    stored = json.loads(grid_path.read_text())
    rows = []
    for p in stored["points"]:
        name = point_name(p, stored["axes"])
        point_dir = grid_dir / name
        row: dict[str, Any] = {"point": name, **{a: p.get(a) for a in stored["axes"]}}
        row["status"] = point_status(point_dir)
        status_path = point_dir / STATUS_FILE
        row["seconds"] = json.loads(status_path.read_text()).get("seconds") if status_path.is_file() else math.nan
        if row["status"] == "done":
            row.update(_flatten(json.loads((point_dir / METRICS_FILE).read_text())))
        rows.append(row)
    return pd.DataFrame(rows), stored


def _library_function(name: str, what: str):
    """``"banana.module:function"`` -> the function (grid files may name banana's own code only)."""
    import importlib

    module, _, attr = str(name).partition(":")
    if not module.startswith("banana.") or not attr:
        raise ValueError(f"report {what!r} must name a banana function as 'banana.module:name', got {name!r}")
    return getattr(importlib.import_module(module), attr)


#: Readable names of metric and axis columns: the package-wide ones (:data:`banana.style.LABELS`).
LABELS = STYLE_LABELS


def _slide(fig, title: str = "") -> None:
    """A seaborn figure brought to the house style: 16:9, its title on top, the legend outside the
    panels on the right."""
    fig.set_size_inches(*slide_size())
    legend = fig.legends[0] if fig.legends else None
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.8 if legend else 1, 1))
    if legend is not None:
        legend.set_bbox_to_anchor((0.81, 0.5), transform=fig.transFigure)
        legend.set_loc("center left")


def _figure(frame, stored: Mapping, figure: Mapping[str, Any], path: Path) -> Path | None:
    """:func:`grid_figure` saved to ``path`` (None when the grid has nothing to draw)."""
    import matplotlib.pyplot as plt

    # No matplotlib.use("Agg") here: inside a notebook kernel that would switch off inline plotting
    # for every later cell (aggregate() runs in notebooks too); headless processes default to Agg.
    fig = grid_figure(frame, stored, figure)
    if fig is None:
        return None
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def grid_figure(frame, stored: Mapping, figure: Mapping[str, Any]):
    """One figure of a grid file's ``report.figures`` entry: a library plotting function of the
    frame (``plot: banana.module:name``), or seaborn panels, one per metric, ``x`` against the
    metric, ``hue``/``style`` lines, mean and sd over the remaining axes (seeds). House style."""
    import seaborn as sns

    if figure.get("plot"):                     # a library plotting function "module:name" of the frame
        use_style()
        fig = _library_function(figure["plot"], "plot")(frame)
        if figure.get("title"):
            fig.suptitle(figure["title"])
        return fig
    for column, value in (figure.get("where") or {}).items():
        if column in frame.columns:
            frame = frame[frame[column].astype(str) == str(value)]
    # Axes a (profile's smaller) grid does not have are dropped from the figure, not an error.
    figure = {k: v for k, v in figure.items() if k not in ("hue", "style", "size") or v in frame.columns}
    metrics = [m for m in figure.get("metrics", []) if m in frame.columns]
    x = figure["x"]
    if not metrics or x not in frame.columns:
        return None
    id_columns = [c for c in (x, figure.get("hue"), figure.get("style"), figure.get("size")) if c]
    long = frame.melt(id_vars=[c for c in dict.fromkeys(id_columns)], value_vars=metrics, var_name="metric",
                      value_name="value").dropna(subset=["value"])
    if long.empty:
        return None
    for column in ("hue", "style"):            # categories, not a colour/marker scale
        name = figure.get(column)
        if name and name != x:
            long[name] = long[name].astype(str)
    kind = figure.get("kind", "line")
    rows, cols = panel_layout(len(metrics))
    width, height = slide_size()
    kwargs = dict(x=x, y="value", col="metric", col_wrap=cols if len(metrics) > 1 else None, hue=figure.get("hue"),
                  style=figure.get("style"), kind=kind, facet_kws={"sharey": False}, height=height / rows,
                  aspect=(0.8 * width / cols) / (height / rows))
    if kind == "line":
        kwargs.update(marker="o", errorbar="sd")
    else:
        kwargs.update(size=figure.get("size"))
    long["metric"] = long["metric"].map(lambda m: LABELS.get(m, m))
    use_style()
    grid = sns.relplot(long, **kwargs)
    if figure.get("logx"):
        for ax in grid.axes.flat:
            if figure["logx"] == "symlog":
                # linear up to the smallest non-zero x: no empty decade between 0 and the first point
                positive = long.loc[long[x] > 0, x]
                linthresh = max(float(figure.get("linthresh", 0.01)), float(positive.min()) if len(positive) else 0.0)
                ax.set_xscale("symlog", linthresh=linthresh)
                if long[x].min() >= 0:           # no empty negative half for non-negative data
                    ax.set_xlim(left=-linthresh / 4)
            else:
                ax.set_xscale("log")
            if x in stored.get("axes", {}):      # a grid axis: tick exactly the values the grid ran
                values = sorted(long[x].unique())
                ax.set_xticks(values, [f"{v:g}" for v in values])
                ax.minorticks_off()
            else:                                # a measured x (seconds): decades only, no crowded minor labels
                from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
    grid.set_titles("{col_name}")
    grid.set_axis_labels(LABELS.get(x, x), "")
    floors = [m for m in metrics if f"{m}_floor" in frame.columns and frame[f"{m}_floor"].notna().any()]
    for m in floors:                            # the best floor on the same images, as a reference line
        floor_line(grid.axes_dict[LABELS.get(m, m)], float(frame[f"{m}_floor"].mean()))
    _slide(grid.figure, figure.get("title", "") + ("  (dashed: best floor)" if floors else ""))
    return grid.figure


def plot_grid_results(results, x: str, metrics, hue: str | None = None, log_x: bool = False):
    """The aggregated grid (``results.csv`` as a DataFrame) against one axis: a panel per metric, a
    line per ``hue`` value (mean over the other axes, e.g. seeds), the mean 95% bootstrap interval
    over images as a band, the best floor dashed. What notebooks 06 and 07 end with."""
    import matplotlib.pyplot as plt
    import numpy as np

    done = results[results["status"] == "done"] if "status" in results else results
    metrics = [m for m in metrics if m in done.columns and done[m].notna().any()]
    if not metrics:
        raise ValueError(f"none of the metrics is in the results; columns: {sorted(results.columns)}")
    use_style()
    rows, cols = panel_layout(len(metrics))
    fig, axes = plt.subplots(rows, cols, figsize=slide_size(), squeeze=False, layout="constrained")
    groups = done.groupby(hue) if hue and hue in done.columns else [(None, done)]
    for ax, metric in zip(axes.flat, metrics):
        for value, part in groups:
            agg = part.groupby(x)[[c for c in (metric, f"{metric}_ci_lo", f"{metric}_ci_hi") if c in part]].mean()
            line, = ax.plot(agg.index, agg[metric], marker="o", label=None if value is None else f"{label(hue)} {value}")
            if f"{metric}_ci_lo" in agg:
                ax.fill_between(agg.index, agg[f"{metric}_ci_lo"], agg[f"{metric}_ci_hi"], color=line.get_color(),
                                alpha=0.2)
        if f"{metric}_floor" in done.columns and done[f"{metric}_floor"].notna().any():
            floor_line(ax, float(np.nanmean(done[f"{metric}_floor"])))
        if log_x and (done[x] > 0).all():
            ax.set_xscale("log")
        elif log_x:                             # zero on the axis: linear up to the smallest non-zero value
            ax.set_xscale("symlog", linthresh=max(1e-3, float(done.loc[done[x] > 0, x].min())))
        values = sorted(done[x].unique())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.set_title(label(metric))
        ax.set_xlabel(label(x))
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    legend = {name: handle for ax in axes.flat for handle, name in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="outside right upper", frameon=False)
    return fig


def axis_reading(results, axis: str, metrics) -> str:
    """A grid read along one axis, as Markdown computed from ``results.csv`` (a DataFrame): per
    metric, each setting's value (mean over seeds) with its 95% interval over images and whether
    it is above the best floor; then the best setting and which others its interval separates
    from. Overlapping intervals mean the grid shows no difference, whatever the means say."""
    from banana.evaluation.comparison import POINT_METRICS

    done = results[results["status"] == "done"] if "status" in results else results
    lines = []
    for metric in [m for m in metrics if m in done.columns and done[m].notna().any()]:
        higher = POINT_METRICS.get(metric, (None, None, True))[2]
        cols = [c for c in (metric, f"{metric}_ci_lo", f"{metric}_ci_hi", f"{metric}_above_floor") if c in done]
        per = done.groupby(axis)[cols].mean()
        spread = done.groupby(axis)[metric].std() if done.groupby(axis).size().max() > 1 else None
        cells = []
        for value, row in per.iterrows():
            text = f"{value}: {row[metric]:.3f}"
            if f"{metric}_ci_lo" in row:
                text += f" [{row[f'{metric}_ci_lo']:.3f}, {row[f'{metric}_ci_hi']:.3f}]"
            if spread is not None and spread.notna()[value]:
                text += f" (seed sd {spread[value]:.3f})"
            if f"{metric}_above_floor" in row and row[f"{metric}_above_floor"] < 1:
                text += " *at floor*"
            cells.append(text)
        best = per[metric].idxmax() if higher else per[metric].idxmin()
        verdict = ""
        if f"{metric}_ci_lo" in per:
            lo, hi = per.loc[best, f"{metric}_ci_lo"], per.loc[best, f"{metric}_ci_hi"]
            apart = [v for v in per.index if v != best and (per.loc[v, f"{metric}_ci_hi"] < lo if higher
                                                            else per.loc[v, f"{metric}_ci_lo"] > hi)]
            same = [v for v in per.index if v != best and v not in apart]
            verdict = (f" Best: **{axis} = {best}**; its interval separates it from {apart or 'no other setting'}"
                       + (f", overlaps {same} (no difference shown)." if same else "."))
        if f"{metric}_above_floor" in per and (per[f"{metric}_above_floor"] < 1).all():
            verdict = " Every setting is at floor: no finding on this metric."
        lines.append(f"- **{label(metric)}**: " + "; ".join(cells) + "." + verdict)
    return "\n".join(lines) + "\n"


def aggregate(grid_dir: str | Path, reports_dir: str | Path | None = None, name: str | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``results_long.csv``, figures and ``summary.md`` for a grid folder
    into ``reports_dir`` (default ``reports/<grid name>``). Returns the written paths."""
    import pandas as pd

    from banana.paths import REPO_ROOT, repo_relative

    frame, stored = collect(grid_dir)
    name = name or stored.get("name") or Path(grid_dir).name
    out = Path(reports_dir) if reports_dir is not None else REPO_ROOT / "reports" / name
    out.mkdir(parents=True, exist_ok=True)
    axes = list(stored["axes"])
    written: dict[str, Path] = {}
    frame.to_csv(out / "results.csv", index=False)
    written["results"] = out / "results.csv"
    done = frame[frame["status"] == "done"]
    metric_columns = [c for c in frame.columns if c not in (*axes, "point", "status", "seconds")
                      and not c.endswith(("_ci_lo", "_ci_hi", "_floor", "_above_floor"))]
    long = done.melt(id_vars=["point", *axes], value_vars=metric_columns, var_name="metric", value_name="value")
    long.to_csv(out / "results_long.csv", index=False)
    written["results_long"] = out / "results_long.csv"

    figures = list(stored.get("report", {}).get("figures", []))
    if not figures and axes:
        x = next((a for a in axes if a != "seed"), axes[0])
        figures = [{"name": "metrics", "x": x, "metrics": metric_columns[:8]}]
    for figure in figures:
        path = _figure(done, stored, figure, out / f"{name}_{figure.get('name', 'metrics')}.png")
        if path is not None:
            written[f"figure:{figure.get('name', 'metrics')}"] = path

    # Mean ± sd over seeds (or over nothing, if there is no seed axis).
    group = [a for a in axes if a != "seed"]
    shown = [m for m in stored.get("report", {}).get("table", metric_columns) if m in done.columns]
    lines = [f"# Grid `{name}`", "",
             f"Notebook `{stored['notebook']}`, profile `{stored['profile']}`, git `{stored.get('git_sha')}`, "
             f"{len(frame)} points: " + ", ".join(f"{k} {v}" for k, v in frame["status"].value_counts().items()) + ".",
             "", f"Fixed parameters: `{json.dumps(stored['parameters'])}`.", ""]
    if not done.empty and shown:
        numeric = done[group + shown] if group else done[shown]
        extra = [c for m in shown for c in (f"{m}_ci_lo", f"{m}_ci_hi", f"{m}_above_floor") if c in done.columns]
        keys = group or ["point"]
        stats = done[keys + shown + extra].groupby(keys, dropna=False, sort=True).agg(["mean", "std", "count", "min"])
        table = pd.DataFrame(index=stats.index)
        for m in shown:
            mean, std, count = stats[(m, "mean")], stats[(m, "std")], stats[(m, "count")]
            cells = [f"{a:.4g} ± {s:.2g}" if c > 1 else f"{a:.4g}" for a, s, c in zip(mean, std.fillna(0), count)]
            answered = list(count > 0)          # a point that did not answer this metric (NaN) shows a dash
            if f"{m}_ci_lo" in done.columns:     # the bootstrap interval over images (mean of the seeds' bounds)
                cells = [f"{c} [{lo:.3g}, {hi:.3g}]" for c, lo, hi in
                         zip(cells, stats[(f"{m}_ci_lo", "mean")], stats[(f"{m}_ci_hi", "mean")])]
            if f"{m}_above_floor" in done.columns:   # at floor unless every seed is above the best floor
                cells = [c if above == 1 else f"{c} (at floor)" for c, above in
                         zip(cells, stats[(f"{m}_above_floor", "min")])]
            table[m] = [c if ok else "—" for c, ok in zip(cells, answered)]
        table["n"] = stats[(shown[0], "count")].astype(int)
        table = table.reset_index()
        if not group:
            table = table.drop(columns="point")
        title = "Mean ± sd over seeds" if "seed" in axes else "Results"
        lines += [f"## {title}", ""]
        if extra:
            lines += ["Each cell: mean ± sd over seeds, then [the 95% bootstrap interval over the scored images], "
                      "\"(at floor)\" when a seed's point is not distinguishable (paired bootstrap) from the best floor "
                      "baseline on the same images.", ""]
        lines += [table.to_markdown(index=False), ""]
        floor_values = {m: done[f"{m}_floor"].dropna().unique() for m in shown if f"{m}_floor" in done.columns}
        if floor_values:
            lines += ["Best floor baseline per metric (per-pixel majority class / median train depth / mean train "
                      "normal, and the untuned base generator where the point scored it): "
                      + ", ".join(f"{m} {', '.join(f'{v:.4g}' for v in vals)}" for m, vals in floor_values.items())
                      + ".", ""]
    verdict = stored.get("report", {}).get("verdict")
    if verdict and not done.empty:             # a computed reading of the results ("banana.module:name")
        text = _library_function(verdict, "verdict")(done)
        (out / "verdict.md").write_text(text + "\n")
        written["verdict"] = out / "verdict.md"
        lines += [text, ""]
    failed = frame[frame["status"].isin(["failed", "timeout"])]
    if not failed.empty:
        lines += ["## Failed points", ""]
        for point in failed["point"]:
            status = json.loads((Path(grid_dir) / point / STATUS_FILE).read_text())
            lines.append(f"- `{point}`: {status['status']}: {status.get('error')}")
        lines.append("")
    figure_paths = [p for k, p in written.items() if k.startswith("figure:")]
    if figure_paths:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figure_paths] + [""]
    lines += [f"Reproduce: `banana grid notebooks/{stored['notebook']}.ipynb --grid grids/{name}.yaml "
              f"--profile {stored['profile']} --out {repo_relative(grid_dir)}` (finished points are skipped), then "
              f"`banana aggregate {repo_relative(grid_dir)}`.", ""]
    (out / "summary.md").write_text("\n".join(lines))
    written["summary"] = out / "summary.md"
    return written
