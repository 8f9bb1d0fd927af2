"""Losses, one per file: pre-training (NT-Xent, MoCo InfoNCE) and stealing (StolenEncoder's Eq. 7, the
ICML'22 losses, Cont-Steal's). Each stealing loss is a `StealLoss` unit with its own hyper-parameters
(`Config`) in `STEAL_LOSSES`; the plain functions stay importable for tests and notebooks.
Shapes: N×D feature batches in, a scalar out (see each file).
"""

from stealkit.losses.base import STEAL_LOSSES, StealLoss, build_loss, register_loss
from stealkit.losses.cont_steal import ContStealAnchorLoss, cont_steal_loss
from stealkit.losses.contrastive import moco_infonce, nt_xent
from stealkit.losses.distance import DISTANCES, feature_distance
from stealkit.losses.infonce import InfoNCELoss, infonce_loss
from stealkit.losses.mse import MSELoss, mse_loss
from stealkit.losses.soft_nn import SoftNNLoss, soft_nn_loss
from stealkit.losses.stolen_encoder import StolenEncoderLoss, stolen_encoder_loss
from stealkit.losses.wasserstein import WassersteinLoss, wasserstein_loss

__all__ = [
    "DISTANCES", "STEAL_LOSSES", "ContStealAnchorLoss", "InfoNCELoss", "MSELoss", "SoftNNLoss", "StealLoss",
    "StolenEncoderLoss", "WassersteinLoss", "build_loss", "cont_steal_loss", "feature_distance", "infonce_loss",
    "moco_infonce", "mse_loss", "nt_xent", "register_loss", "soft_nn_loss", "stolen_encoder_loss", "wasserstein_loss",
]
