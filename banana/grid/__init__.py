"""Run a notebook over a parameter grid with papermill, resumably; aggregate the results.

A grid file (YAML, ``grids/NAME.yaml``) says which parameter values to run::

    parameters:            # the same for every point
      n_eval: null
    grid:                  # one block, or a list of blocks whose points are concatenated
      product:             # every combination of these axes ...
        mixing_ratio: [0, 0.05, 0.5]
        seed: [0, 1]
      zip:                 # ... times these axes varied together (equal lengths)
        tuning: [lora, full]
        learning_rate: [0.001, 0.0001]
    profiles:              # optional: a profile replaces `grid` and/or updates `parameters`
      smoke: {grid: {product: {mixing_ratio: [0, 1], seed: [0]}}}
    report:                # optional: figures `banana aggregate` draws
      figures:
        - {name: tradeoff, x: mixing_ratio, hue: tuning, metrics: [segmentation_miou, denoising_loss]}

Each point runs in a fresh kernel (a ``papermill`` subprocess, so a timeout can kill it and its
kernel) and gets ``profile``, ``output_dir`` (its own folder) and its parameters. The notebook
writes ``metrics.json`` (a flat or nested dict of numbers) into ``output_dir``. The runner writes,
per point, ``runs/NAME/<point>/``: ``parameters.json``, the executed ``notebook.ipynb``,
``status.json`` (``done`` | ``failed`` | ``timeout``, seconds, error and traceback tail) and the
notebook's own files. A point counts as finished when ``status.json`` says ``done`` and
``metrics.json`` exists, both written atomically, so a killed grid loses no finished point and a
rerun skips them. Failed points are skipped on a rerun unless ``retry_failed`` (then only they run).

``aggregate(grid_dir)`` turns a grid folder into a tidy table (``results.csv``: one row per point,
parameters then metrics; ``results_long.csv``: one row per point and metric), seaborn figures and a
Markdown summary (mean ± sd over seeds) under ``reports/NAME/``.

The package: :mod:`banana.grid.spec` (grid files, point names and point state),
:mod:`banana.grid.runner` (:func:`run_grid`, :func:`run_point`) and :mod:`banana.grid.report`
(:func:`collect`, :func:`aggregate`); everything public is importable from ``banana.grid``.
"""

from __future__ import annotations

from banana.grid.report import aggregate, axis_reading, collect, plot_grid_results
from banana.grid.runner import grid_summary, run_grid, run_point
from banana.grid.spec import (GRID_FILE, METRICS_FILE, NOTEBOOK_FILE, PARAMETERS_FILE, RESERVED, STATUS_FILE, GridSpec,
                              expand_block, expand_grid, load_grid, notebook_defaults, point_name, point_status,
                              with_parameters)

__all__ = ["GridSpec", "load_grid", "expand_grid", "expand_block", "notebook_defaults", "point_name", "point_status",
           "with_parameters", "run_point", "run_grid", "grid_summary", "collect", "aggregate", "plot_grid_results",
           "axis_reading", "STATUS_FILE", "METRICS_FILE",
           "PARAMETERS_FILE", "NOTEBOOK_FILE", "GRID_FILE", "RESERVED"]
