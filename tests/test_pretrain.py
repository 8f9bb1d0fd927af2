"""SimCLR/MoCo pre-training: resume equals an uninterrupted run; the MoCo queue and EMA behave."""

import pytest
import torch

from stealkit.pretrain.config import PretrainConfig
from stealkit.pretrain.trainer import MoCoModel, pretrain
from stealkit.models.encoder import build_encoder


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
