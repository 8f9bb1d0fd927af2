"""Query accounting of StolenEncoder and its variants, budgets, caching, and resume."""

import pytest
import torch

from stealkit.attacks import build_attack
from stealkit.attacks.stolen_encoder import StealConfig, train_stolen_encoder
from stealkit.data.imageset import ImageSet
from stealkit.models.encoder import build_encoder
from stealkit.targets import BudgetExceeded, LocalTarget


def _set(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(n), ["x"], "rand")


def _victim():
    torch.manual_seed(0)
    return build_encoder("cnn_tiny").eval()


FAST = {"arch": "cnn_tiny", "epochs": 2, "batch_size": 32}


def test_stolenencoder_spends_exactly_D_queries():
    target, surrogate = LocalTarget(_victim()), _set()
    result = build_attack("stolenencoder", FAST).steal(target, surrogate, progress=False)
    assert target.queries == len(surrogate) == result.queries


def test_query_aug_spends_e_plus_one_times_D():
    target, surrogate = LocalTarget(_victim()), _set()
    result = build_attack("stolenencoder-query-aug", {**FAST, "epochs": 3}).steal(target, surrogate, progress=False)
    assert target.queries == (3 + 1) * len(surrogate) == result.queries
    assert [e["aug_queries"] for e in result.log] == [len(surrogate)] * 3


def test_wo_aug_is_lambda_zero():
    attack = build_attack("stolenencoder-wo-aug", FAST)
    assert attack.config.lam == 0.0
    result = attack.steal(LocalTarget(_victim()), _set(), progress=False)
    assert all(e["l2"] == 0.0 for e in result.log)


def test_budget_is_never_exceeded():
    target = LocalTarget(_victim(), budget=100)
    target.embed(_set(60).images)
    with pytest.raises(BudgetExceeded, match="40 left"):
        target.embed(_set(41).images)
    assert target.queries == 60  # the refused call billed nothing
    target.embed(_set(40).images)
    assert target.queries == 100 == target.budget
    with pytest.raises(BudgetExceeded):
        target.embed(_set(1).images)
    # an attack whose surrogate needs more than the budget fails before training, having spent <= budget
    target2 = LocalTarget(_victim(), budget=50)
    with pytest.raises(BudgetExceeded):
        build_attack("stolenencoder", FAST).steal(target2, _set(96), progress=False)
    assert target2.queries <= 50


def test_query_cache_means_no_second_payment(tmp_path):
    target, surrogate = LocalTarget(_victim()), _set()
    first = build_attack("stolenencoder", {**FAST, "epochs": 1}).steal(target, surrogate, workdir=tmp_path, progress=False)
    assert target.queries == 96
    fresh = LocalTarget(_victim())
    again = build_attack("stolenencoder", {**FAST, "epochs": 1}).steal(fresh, surrogate, workdir=tmp_path / "x", progress=False)
    assert fresh.queries == 96  # a different workdir pays
    cached_target = LocalTarget(_victim())
    (tmp_path / "train_state.pt").unlink()
    third = build_attack("stolenencoder", {**FAST, "epochs": 1}).steal(cached_target, surrogate, workdir=tmp_path, progress=False)
    assert cached_target.queries == 0 and third.queries == 96 and third.info["queries_from_cache"] == 96
    assert first.queries == again.queries == 96


def test_resume_gives_same_weights_as_uninterrupted(tmp_path):
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    feats = torch.randn(64, 16, generator=g)
    cfg = StealConfig(arch="cnn_tiny", epochs=3, batch_size=32, checkpoint_every=1, amp=False)
    full, full_log = train_stolen_encoder(images, feats, cfg, device="cpu", progress=False)
    # "interrupted" after epoch 2, then restarted with the same state file
    state = tmp_path / "state.pt"
    train_stolen_encoder(images, feats, cfg.model_copy(update={"epochs": 2}), device="cpu", state_path=state, progress=False)
    resumed, resumed_log = train_stolen_encoder(images, feats, cfg, device="cpu", state_path=state, progress=False)
    assert len(resumed_log) == 3
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    assert resumed_log[-1]["loss"] == pytest.approx(full_log[-1]["loss"], rel=1e-5)


class CrashAfter(LocalTarget):
    """A LocalTarget that dies right after answering (and billing) its `calls`-th embed call."""

    def __init__(self, encoder, calls):
        super().__init__(encoder)
        self.calls, self.armed = calls, True

    def embed(self, images):
        out = super().embed(images)
        self.calls -= 1
        if self.armed and self.calls == 0:
            raise RuntimeError("process killed after the answer was paid")
        return out


def test_query_aug_counts_what_a_crashed_attempt_paid(tmp_path):
    """Epoch 3's augmented queries are paid, then the process dies before the next checkpoint (every 2
    epochs). The rerun resumes at epoch 2 and pays for epoch 3 again: the report must say what the
    target billed in all, not only what the surviving log shows."""
    surrogate = _set()
    target = CrashAfter(_victim(), calls=4)  # 1: the |D| queries; 2-4: epochs 1-3 of query-aug (batches of 256 > 96)
    attack = build_attack("stolenencoder-query-aug", {**FAST, "epochs": 4, "checkpoint_every": 2})
    with pytest.raises(RuntimeError, match="killed"):
        attack.steal(target, surrogate, workdir=tmp_path, progress=False)
    target.armed = False
    result = attack.steal(target, surrogate, workdir=tmp_path, progress=False)
    assert target.queries == (1 + 3 + 2) * len(surrogate)  # |D|, epochs 1-3, then epochs 3-4 again
    assert result.queries == target.queries
