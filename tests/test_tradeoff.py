"""The trade-off's reading (Pareto frontier, queries to reach a target SA, the goal's bar) against hand-worked
cases, and the adaptive thieves' targets (averaging, re-normalising, offline) against direct computation."""

import pytest
import torch
import torch.nn.functional as F

from stealkit.experiment.tradeoff import goal_check, pareto_front, queries_to_reach
from stealkit.targets.adaptive import AveragingTarget, NormalisingTarget, OfflineTarget
from stealkit.targets.base import BudgetExceeded, Target


def test_pareto_front_by_hand():
    # (TA-honest, SA): a undefended, b strictly better than c on both axes, d the most protective, e dominated by a
    pts = [(64.0, 58.0), (63.5, 20.0), (60.0, 25.0), (40.0, 10.0), (63.0, 60.0)]
    assert pareto_front(pts) == [3, 1, 0]  # by increasing SA: d, b, a; c (by b) and e (by a) dominated


def test_pareto_front_keeps_ties_and_single_points():
    assert pareto_front([(50.0, 10.0), (50.0, 10.0)]) == [0, 1]
    assert pareto_front([(1.0, 2.0)]) == [0]
    assert pareto_front([(50.0, 10.0), (50.0, 12.0)]) == [0]  # equal TA, higher SA: dominated


def test_queries_to_reach_interpolates_between_budgets():
    # SA 30 at 1,000 and 50 at 2,500; target 40 lies halfway: 1,750 queries
    assert queries_to_reach({1000: 30.0, 2500: 50.0}, 40.0) == (1750.0, "interpolated")
    assert queries_to_reach({1000: 30.0, 2500: 50.0}, 50.0) == (2500.0, "measured")
    assert queries_to_reach({1000: 45.0, 2500: 50.0}, 40.0) == (1000.0, "at most")
    assert queries_to_reach({1000: 30.0, 2500: 35.0}, 40.0) == (None, "not reached")
    # three budgets: the first bracket that reaches it counts
    assert queries_to_reach({500: 10.0, 1000: 20.0, 3000: 60.0}, 40.0) == (2000.0, "interpolated")
    with pytest.raises(ValueError):
        queries_to_reach({}, 1.0)


def test_goal_check_by_hand():
    g = goal_check(ta_honest=63.0, ta_undefended=64.5, sa_worst=40.0, sa_baseline=25.0)
    assert g["ta_loss"] == pytest.approx(1.5) and g["sa_gain"] == pytest.approx(15.0)
    assert not g["met"] and g["ta_gap"] == pytest.approx(0.5) and g["sa_gap"] == pytest.approx(5.0)
    g = goal_check(ta_honest=64.0, ta_undefended=64.5, sa_worst=34.0, sa_baseline=25.0)
    assert g["met"] and g["ta_gap"] == 0.0 and g["sa_gap"] == 0.0


class Noisy(Target):
    """Answers x·1 + noise of a fixed seed per call count: a defence that draws fresh noise per call."""

    def __init__(self, seed):
        super().__init__(None)
        self.gen = torch.Generator().manual_seed(seed)

    @property
    def feature_dim(self):
        return 4

    def _embed(self, images):
        base = images.float().mean((2, 3)).repeat(1, 2)[:, :4]
        return base + torch.randn(base.shape, generator=self.gen)


def test_averaging_target_is_the_mean_of_its_repeats_and_bills_them_all():
    imgs = torch.randint(0, 255, (5, 3, 4, 4), dtype=torch.uint8)
    reps = [Noisy(s) for s in (1, 2, 3)]
    twins = [Noisy(s) for s in (1, 2, 3)]
    avg = AveragingTarget(reps).embed(imgs)
    expected = torch.stack([t.embed(imgs) for t in twins]).mean(0)
    assert torch.allclose(avg, expected)
    t = AveragingTarget([Noisy(s) for s in (1, 2, 3)], budget=16)
    t.embed(imgs)
    assert t.queries == 15
    with pytest.raises(BudgetExceeded):
        t.embed(imgs[:1])  # 3 more would be 18 > 16
    assert t.queries == 15


def test_normalising_and_offline_targets():
    imgs = torch.randint(1, 255, (3, 3, 4, 4), dtype=torch.uint8)
    inner = Noisy(0)
    out = NormalisingTarget(inner).embed(imgs)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-6)
    ref = Noisy(0).embed(imgs)
    assert torch.allclose(out, ref / ref.norm(dim=1, keepdim=True))
    off = OfflineTarget(7)
    assert off.feature_dim == 7
    with pytest.raises(RuntimeError, match="cached"):
        off.embed(imgs)


def test_recentred_undoes_a_scaled_map_plus_shift_by_hand():
    """Answers y = s·x + b: minus their mean they are s·(x - mean x), and normalised they are unit(x - mean x)."""
    from stealkit.targets.adaptive import recentred

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])  # mean (1, 1): centred rows (0,-1), (-1,0), (1,1)
    y = 4.0 * x + torch.tensor([10.0, -3.0])
    expected = torch.tensor([[0.0, -1.0], [-1.0, 0.0], [2 ** -0.5, 2 ** -0.5]])
    assert torch.allclose(recentred(y), expected, atol=1e-6)
    # B4B's maps (A, B with i.i.d. U(-1,1) entries, D = 512): centring removes B exactly, leaving unit((x - x̄)A),
    # a linear image of the victim's centred features; without it the shared shift B pulls every pair of answers
    # together (independent random features: mean cosine 0.47 with B, -1/(N-1) on average once centred)
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(64, 512, generator=g), dim=1)
    a, b = torch.rand(512, 512, generator=g) * 2 - 1, torch.rand(512, generator=g) * 2 - 1
    assert torch.allclose(recentred(f @ a + b), F.normalize((f - f.mean(0)) @ a, dim=1), atol=1e-5)
    off = ~torch.eye(64, dtype=torch.bool)
    plain, centred = F.normalize(f @ a + b, dim=1), recentred(f @ a + b)
    assert (plain @ plain.T)[off].mean() > 0.4 and abs(float((centred @ centred.T)[off].mean())) < 0.05


class Counter(Target):
    """Answers [image id, how many times this image was asked before]: shows which answer each image kept."""

    def __init__(self):
        super().__init__(None)
        self.asked = {}

    @property
    def feature_dim(self):
        return 2

    def _embed(self, images):
        out = []
        for im in images:
            i = int(im[0, 0, 0])
            out.append([i, self.asked.get(i, 0)])
            self.asked[i] = self.asked.get(i, 0) + 1
        return torch.tensor(out, dtype=torch.float32)


def test_diluted_queries_by_hand():
    from stealkit.targets.adaptive import diluted_queries

    imgs = torch.zeros(6, 3, 2, 2, dtype=torch.uint8)
    imgs[:, 0, 0, 0] = torch.arange(6, dtype=torch.uint8)
    t = Counter()
    ans, billed = diluted_queries(t, imgs, repeats_per_new=1.0, chunk=2)
    # chunk 0: ask 0, 1.  chunk 1: ask 2, 3, then re-ask 2 least recently asked of {0, 1}: 0, 1.
    # chunk 2: ask 4, 5, then re-ask 2 of {0..3} least recently asked: 2, 3 (asked at step 2; 0 and 1 at step 3)
    assert billed == 10 and t.queries == 10
    assert t.asked == {0: 2, 1: 2, 2: 2, 3: 2, 4: 1, 5: 1}
    assert ans[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert ans[:, 1].tolist() == [1, 1, 1, 1, 0, 0]  # each image keeps its last answer


def test_diluted_queries_with_nudged_near_duplicates():
    from stealkit.targets.adaptive import diluted_queries

    imgs = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    imgs[:, 1, 0, 0] = torch.arange(4, dtype=torch.uint8)  # the id lives in channel 1; the nudge moves channel 0
    seen = []

    class Recorder(Counter):
        def _embed(self, images):
            seen.extend((int(im[1, 0, 0]), int(im[0, 0, 0])) for im in images)
            return torch.zeros(len(images), 2)

    ans, billed = diluted_queries(Recorder(), imgs, repeats_per_new=2.0, chunk=2, nudge=True)
    # chunk 0: 0, 1 as they are; chunk 1: 2, 3, then 4 re-asks of {0, 1} cycling: 0, 1 (nudged by 1), 0, 1 (by 2)
    assert billed == 8
    assert seen == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (0, 2), (1, 2)]


def test_linear_head_lets_a_stolen_encoder_reach_answers_a_relu_encoder_cannot():
    """A ReLU-pooled encoder outputs non-negative vectors: against all-negative answers (the image of a defence's
    rotation, at its extreme) its cosine with every answer is ≤ 0 by construction; `fc: true` adds a Linear layer
    on the pooled features and the same training then points the outputs toward the answers."""
    from stealkit.attacks.trainer import train_stolen_encoder
    from stealkit.models.encoder import embed

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    answers = -F.normalize(torch.rand(64, 64, generator=g), dim=1)  # every entry negative
    conf = {"arch": "cnn_tiny", "epochs": 15, "batch_size": 32, "lr": 0.01, "amp": False, "augment": "none"}
    plain, _ = train_stolen_encoder(images, answers, conf, device="cpu", progress=False)
    head, _ = train_stolen_encoder(images, answers, {**conf, "fc": True}, device="cpu", progress=False)
    assert isinstance(head.head, torch.nn.Linear) and isinstance(plain.head, torch.nn.Identity)
    out_plain, out_head = embed(plain, images), embed(head, images)  # eval mode, as the probe reads them
    assert (out_plain >= 0).all() and (F.cosine_similarity(out_plain, answers) <= 1e-6).all()
    assert F.cosine_similarity(out_head, answers).mean() > 0.5


def test_procrustes_cosines_undo_a_rotation_and_not_noise():
    """benchmarks/answers_vs_clean.py: rotated answers read 1.0; answers with noise of the signal's own size read
    about 1/sqrt(2) (signal and noise of equal norm, independent), rotated or not."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("answers_vs_clean", Path(__file__).parent.parent / "benchmarks" / "answers_vs_clean.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = torch.Generator().manual_seed(0)
    clean = F.normalize(torch.randn(2000, 16, generator=g), dim=1)
    rot, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert torch.allclose(mod.procrustes_cosines(clean, clean @ rot), torch.ones(2000), atol=1e-5)
    noisy = clean @ rot + F.normalize(torch.randn(2000, 16, generator=g), dim=1)
    assert abs(float(mod.procrustes_cosines(clean, noisy).mean()) - 2 ** -0.5) < 0.03
