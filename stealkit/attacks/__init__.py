"""Attack registry. Importing this package registers every attack module."""

from stealkit.attacks.base import ATTACKS, Attack, StealResult, build_attack, register_attack
from stealkit.attacks.queries import query_target
from stealkit.attacks import cont_steal, loss_steal, pretrain_encoder, random_init, stolen_encoder, sybil  # noqa: F401  (registers the attacks)

__all__ = ["ATTACKS", "Attack", "StealResult", "build_attack", "query_target", "register_attack"]
