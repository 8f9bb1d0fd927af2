"""SimCLR/MoCo pre-training: resume equals an uninterrupted run; the MoCo queue and EMA behave."""

import pytest
import torch

from stealkit.pretrain.config import PretrainConfig
from stealkit.pretrain.trainer import MoCoModel, pretrain
from stealkit.models.encoder import build_encoder

pytestmark = pytest.mark.precision  # CI runs these a second time with STEALKIT_BF16=on


def _images(n=64, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_resume_equals_uninterrupted(tmp_path, method):
    cfg = PretrainConfig(method=method, arch="cnn_tiny", epochs=3, batch_size=32, checkpoint_every=1, moco_queue=64, amp=False, device="cpu")
    images = _images()
    full, log_full = pretrain(images, cfg, progress=False)
    state = tmp_path / "state.pt"
    pretrain(images, cfg.model_copy(update={"epochs": 2}), state_path=state, progress=False)
    resumed, log_resumed = pretrain(images, cfg, state_path=state, progress=False)
    assert [e["epoch"] for e in log_resumed] == [1, 2, 3]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    assert log_resumed[-1]["loss"] == pytest.approx(log_full[-1]["loss"], rel=1e-5)


def test_moco_momentum_update_and_queue():
    cfg = PretrainConfig(method="moco", arch="cnn_tiny", moco_queue=8, proj_dim=4, moco_momentum=0.9)
    m = MoCoModel(build_encoder("cnn_tiny"), cfg)
    p_q = next(m.encoder.parameters())
    p_k = next(m.key_encoder.parameters())
    with torch.no_grad():
        p_q.add_(1.0)
    before = p_k.detach().clone()
    m._momentum_update()
    assert torch.allclose(p_k, 0.9 * before + 0.1 * p_q.detach())
    k = torch.randn(5, 4)
    m._enqueue(k)
    assert torch.allclose(m.queue[:5], torch.nn.functional.normalize(k, dim=1)) and m.ptr.item() == 5
    m._enqueue(torch.randn(5, 4))  # wraps around the 8-slot queue
    assert m.ptr.item() == 2


def test_too_few_images_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain(_images(10), PretrainConfig(arch="cnn_tiny", epochs=1, batch_size=32, device="cpu"), progress=False)


def test_split_batchnorm_equals_separate_batchnorms_per_sub_batch():
    """Reference: plain BatchNorm2d in training mode run on each sub-batch x[j::s] by itself; running
    statistics: the mean of theirs."""
    import copy

    from stealkit.pretrain.split_bn import SplitBatchNorm, split_batchnorm, unsplit_batchnorm

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    refs = [copy.deepcopy(bn).train() for _ in range(4)]
    expected = torch.empty_like(x)
    for j, ref in enumerate(refs):
        expected[j::4] = ref(x[j::4])
    split = SplitBatchNorm(copy.deepcopy(bn), 4).train()
    assert torch.allclose(split(x), expected, atol=1e-5)
    assert torch.allclose(split.bn.running_mean, torch.stack([r.running_mean for r in refs]).mean(0), atol=1e-6)
    assert torch.allclose(split.bn.running_var, torch.stack([r.running_var for r in refs]).mean(0), atol=1e-6)
    assert torch.allclose(split.eval()(x), split.bn.eval()(x))  # eval: a plain BatchNorm
    with pytest.raises(ValueError, match="multiple of 4"):
        split.train()(x[:6])
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.Sequential(torch.nn.BatchNorm1d(3)))
    keys = set(net.state_dict())
    split_batchnorm(net, 2)
    assert isinstance(net[1], SplitBatchNorm) and isinstance(net[2][0], SplitBatchNorm)
    assert set(unsplit_batchnorm(net).state_dict()) == keys


def test_moco_keys_are_normalised_with_other_images_than_their_queries():
    """Shuffling BN: the images sharing BatchNorm statistics with key i (its sub-batch in shuffled order)
    are mostly not those sharing them with query i (sub-batch i mod s); with splits=1 keys are unshuffled."""
    cfg = PretrainConfig(method="moco", arch="cnn_tiny", batch_size=64, moco_bn_splits=8, moco_queue=64, proj_dim=8)
    m = MoCoModel(build_encoder("cnn_tiny"), cfg).train()
    key_perm = m.key_shuffles(1, torch.Generator().manual_seed(0))[0]
    s, pos = 8, torch.argsort(key_perm)  # pos[i]: where image i sits in the shuffled key batch
    query_group = lambda i: {j for j in range(64) if j % s == i % s}  # noqa: E731
    key_group = lambda i: {int(key_perm[p]) for p in range(64) if p % s == int(pos[i]) % s}  # noqa: E731
    overlap = sum(len(query_group(i) & key_group(i)) / 8 for i in range(64)) / 64
    assert overlap < 0.35  # 1/8 expected for a random shuffle; 1.0 without shuffling
    v = torch.rand(64, 3, 32, 32)
    plain = MoCoModel(build_encoder("cnn_tiny"), cfg.model_copy(update={"moco_bn_splits": 1})).train()
    ident = plain.key_shuffles(1, torch.Generator().manual_seed(0))[0]
    assert torch.equal(ident, torch.arange(64))
    assert torch.allclose(plain.keys(v, ident), plain.key_head(plain.key_encoder(v)), atol=1e-5)


def test_moco_draws_a_new_key_shuffle_every_step():
    """MoCo's shuffling BN shuffles the keys anew for every mini-batch, not once: the orders of one epoch
    differ from step to step, differ between epochs, and are reproducible from (seed, epoch)."""
    from stealkit.runtime import derived_seed

    cfg = PretrainConfig(method="moco", arch="cnn_tiny", batch_size=64, moco_bn_splits=8, moco_queue=64, proj_dim=8)
    m = MoCoModel(build_encoder("cnn_tiny"), cfg)
    epoch0 = m.key_shuffles(5, torch.Generator().manual_seed(derived_seed("moco-key-shuffle", 0, 0)))
    again = m.key_shuffles(5, torch.Generator().manual_seed(derived_seed("moco-key-shuffle", 0, 0)))
    epoch1 = m.key_shuffles(5, torch.Generator().manual_seed(derived_seed("moco-key-shuffle", 0, 1)))
    assert torch.equal(epoch0, again)
    assert len({tuple(p.tolist()) for p in epoch0}) == 5 and not torch.equal(epoch0, epoch1)
    assert all(torch.equal(p.sort().values, torch.arange(64)) for p in epoch0)  # each a permutation
    _, log = pretrain(_images(64), PretrainConfig(method="moco", arch="cnn_tiny", epochs=2, batch_size=32, moco_bn_splits=4,
                                                  moco_queue=64, amp=False, device="cpu"), progress=False)
    assert len(log) == 2 and all(e["loss"] == e["loss"] for e in log)  # trains (finite losses) with per-step shuffles
    with pytest.raises(ValueError, match="divide batch_size"):
        PretrainConfig(method="moco", batch_size=60, moco_bn_splits=8)


def test_resuming_from_a_state_of_another_layout_says_what_to_do(tmp_path):
    state = tmp_path / "moco.state.pt"
    base = dict(method="moco", arch="cnn_tiny", epochs=1, batch_size=32, checkpoint_every=1, moco_queue=64, amp=False, device="cpu")
    pretrain(_images(64), PretrainConfig(**base, moco_bn_splits=1), state_path=state, progress=False)
    with pytest.raises(RuntimeError, match="Resume with the settings that wrote it, or delete"):
        pretrain(_images(64), PretrainConfig(**{**base, "epochs": 2}, moco_bn_splits=8), state_path=state, progress=False)
    _, log = pretrain(_images(64), PretrainConfig(**{**base, "epochs": 2}, moco_bn_splits=1), state_path=state, progress=False)
    assert [e["epoch"] for e in log] == [1, 2]  # the same layout resumes
