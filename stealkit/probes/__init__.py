"""Downstream probes on frozen features (StolenEncoder, Section V-A 3): the paper's MLP classifier,
a linear probe and a weighted kNN, with feature extraction/caching and multi-encoder evaluation."""

from stealkit.probes.evaluate import (
    PROBES,
    evaluate_encoders,
    evaluate_feature_sets,
    evaluate_features,
    prediction_agreement,
    relative_to,
)
from stealkit.probes.features import FeatureCache, encoder_fingerprint, extract_features
from stealkit.probes.knn import knn_accuracy, knn_predict
from stealkit.probes.linear import LinearConfig, train_linear_probes
from stealkit.probes.mlp import BatchedMLP, MLPConfig, ProbeResult, train_mlp_probe, train_probes

__all__ = [
    "PROBES",
    "BatchedMLP",
    "FeatureCache",
    "LinearConfig",
    "MLPConfig",
    "ProbeResult",
    "encoder_fingerprint",
    "evaluate_encoders",
    "evaluate_feature_sets",
    "evaluate_features",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "prediction_agreement",
    "relative_to",
    "train_linear_probes",
    "train_mlp_probe",
    "train_probes",
]
