"""Scoring decoded predictions: dense-task metrics and codec ceilings."""

from banana.evaluation.metrics import (
    angular_error_deg,
    depth_metrics,
    mean_iou,
    normal_metrics,
    segmentation_confusion,
)
from banana.evaluation.ceiling import codec_ceiling

__all__ = [
    "angular_error_deg",
    "codec_ceiling",
    "depth_metrics",
    "mean_iou",
    "normal_metrics",
    "segmentation_confusion",
]
