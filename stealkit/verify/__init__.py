"""Ownership verification of a suspect encoder (Dziedzic et al., ICML 2022 and NeurIPS 2022): rotation watermark and dataset inference."""

from stealkit.verify.dataset_inference import DatasetInferenceResult, dataset_inference
from stealkit.verify.watermark import (
    WatermarkConfig,
    WatermarkResult,
    embed_watermark,
    load_watermark_head,
    save_watermarked,
    watermark_accuracy,
)

__all__ = [
    "DatasetInferenceResult",
    "WatermarkConfig",
    "WatermarkResult",
    "dataset_inference",
    "embed_watermark",
    "load_watermark_head",
    "save_watermarked",
    "watermark_accuracy",
]
