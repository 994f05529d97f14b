"""Scoring decoded predictions: dense-task metrics and codec ceilings."""

from banana.evaluation.metrics import (
    angular_error_deg,
    depth_metrics,
    mean_iou,
    normal_metrics,
    segmentation_confusion,
)
from banana.evaluation.ceiling import codec_ceiling
from banana.evaluation.harness import (
    evaluate_pipeline,
    evaluate_run,
    evaluate_specialist,
    recompute_metrics,
    time_predict,
    unseen_palette,
    write_evaluation,
)
from banana.evaluation.retention import (
    PipelineSegmenter,
    denoising_loss,
    prompt_adherence,
    retention_report,
    score_adherence,
)

__all__ = [
    "angular_error_deg",
    "codec_ceiling",
    "depth_metrics",
    "mean_iou",
    "normal_metrics",
    "segmentation_confusion",
    "evaluate_pipeline",
    "evaluate_run",
    "evaluate_specialist",
    "recompute_metrics",
    "time_predict",
    "unseen_palette",
    "write_evaluation",
    "PipelineSegmenter",
    "denoising_loss",
    "prompt_adherence",
    "retention_report",
    "score_adherence",
]
