"""Test-wide settings: offline hubs and a headless plotting backend, set before any import
of datasets/huggingface_hub/matplotlib (no hub is reachable on the machines tests run on)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
