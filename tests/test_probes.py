"""Downstream probes against independent references: a hand-computed and a numpy kNN, an
nn.Sequential/torch.optim.Adam MLP trained alone (features normalised by hand with numpy, dropout
masks applied by hand), separable blobs and random labels. Comparisons with the fp32 reference pin
fp32 (amp=False); bf16 training has its own test with a measured tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stealkit.data.imageset import ImageSet
from stealkit.models.encoder import build_encoder
from stealkit.probes import (
    FeatureCache,
    MLPConfig,
    encoder_fingerprint,
    evaluate_encoders,
    evaluate_features,
    knn_accuracy,
    knn_predict,
    prediction_agreement,
    train_linear_probes,
    train_probes,
)
from stealkit.probes.mlp import BatchedMLP, MLPRawConfig
from stealkit.runtime import derived_seed


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.precision]  # see conftest.one_thread


def blobs(n, d=32, c=4, sep=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(c, d, generator=torch.Generator().manual_seed(1234)) * sep
    y = torch.randint(0, c, (n,), generator=g)
    return means[y] + torch.randn(n, d, generator=g), y


# --------------------------------------------------------------------------- kNN


def test_knn_hand_example_weighting_matters():
    # query q=[1,0]; a=[1,0] (class 0, sim 1), b/c=[0.6,±0.8] (class 1, sim 0.6), d=[-1,0] (class 2, sim -1)
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    q = torch.tensor([[2.0, 0.0]])  # not unit length: the probe normalises
    # T=1: class 0 scores e^1 = 2.718, class 1 scores 2·e^0.6 = 3.644 -> 1
    pred, scores = knn_predict(train, labels, q, k=3, temperature=1.0, num_classes=3, return_scores=True)
    assert pred.tolist() == [1]
    assert torch.allclose(scores[0], torch.tensor([math.e, 2 * math.exp(0.6), 0.0]), rtol=1e-5)
    # T=0.1: e^10 = 22026 vs 2·e^6 = 807 -> 0 (an unweighted majority would say 1)
    assert knn_predict(train, labels, q, k=3, temperature=0.1).tolist() == [0]
    # k larger than the bank is clipped; class 2 adds e^-1
    _, s = knn_predict(train, labels, q, k=10, temperature=1.0, return_scores=True)
    assert s[0, 2].item() == pytest.approx(math.exp(-1), rel=1e-5)
    assert knn_accuracy(train, labels, q, torch.tensor([0]), k=3, T=0.1) == 1.0


def numpy_knn(train, labels, test, k, t, c):
    tr = train / np.linalg.norm(train, axis=1, keepdims=True)
    te = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds, all_scores = [], []
    for q in te:
        sims = np.array([float(np.dot(q, x)) for x in tr])
        order = np.argsort(-sims, kind="stable")[:k]
        scores = np.zeros(c)
        for i in order:
            scores[labels[i]] += np.exp(sims[i] / t)
        preds.append(int(np.argmax(scores)))
        all_scores.append(scores)
    return np.array(preds), np.array(all_scores)


@pytest.mark.parametrize("k,t", [(7, 0.1), (50, 0.5)])
def test_knn_matches_numpy_reference_with_chunking(k, t):
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(57, 16)).astype(np.float32)
    labels, test_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 57)
    ref_pred, ref_scores = numpy_knn(train, labels, test, k, t, 5)
    # max_elements=1000 -> chunks of 3 test rows
    pred, scores = knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test), k=k,
                               temperature=t, num_classes=5, max_elements=1000, return_scores=True)
    assert pred.tolist() == ref_pred.tolist()
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-4)
    acc = knn_accuracy(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test),
                       torch.from_numpy(test_labels), k=k, T=t, num_classes=5)
    assert acc == pytest.approx(float((ref_pred == test_labels).mean()))


# --------------------------------------------------------------------------- MLP / linear


def test_mlp_defaults_are_the_papers_and_the_released_codes_and_layer_sizes():
    c = MLPConfig()
    # paper (Section V-A 3): 512-256, Adam 1e-4, batch 256, 500 epochs; released code: normalised input, Dropout(0.5)
    assert (c.hidden, c.lr, c.batch_size, c.epochs, c.normalize, c.dropout) == ((512, 256), 1e-4, 256, 500, True, 0.5)
    raw = MLPRawConfig()
    assert (raw.hidden, raw.lr, raw.epochs, raw.normalize, raw.dropout) == ((512, 256), 1e-4, 500, False, 0.0)
    model = BatchedMLP([20, 12], c.hidden, 7, seeds=[0, 1])
    assert [tuple(w.shape) for w in model.weights] == [(2, 20, 512), (2, 512, 256), (2, 256, 7)]
    seq = model.export(1)
    assert [(m.in_features, m.out_features) for m in seq if isinstance(m, nn.Linear)] == [(12, 512), (512, 256), (256, 7)]
    assert sum(isinstance(m, nn.ReLU) for m in seq) == 2
    released = [type(m).__name__ for m in model.export(1, normalize=True, dropout=0.5)]
    assert released == ["L2Normalize", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]  # nn_classifier.py's order
    assert torch.all(model.weights[0][1, 12:] == 0)  # padded input rows of the 12-d probe
    with pytest.raises(ValueError, match="unknown probe config"):
        MLPConfig.make(learning_rate=1.0)


@pytest.mark.parametrize("probe,cfg", [
    ("mlp", {"epochs": 15, "lr": 1e-3, "batch_size": 64}),
    ("linear", {"epochs": 15, "batch_size": 64}),
    ("linear", {"optimizer": "lbfgs", "epochs": 50}),
])
def test_probes_separate_gaussian_blobs(probe, cfg):
    x, y = blobs(400)
    xt, yt = blobs(400, seed=1)
    r = evaluate_features(x, y, xt, yt, probe=probe, device="cpu", **cfg)
    assert r["accuracy"] > 0.95 and r["predictions"].shape == (400,)
    assert r["seconds"] > 0


@pytest.mark.parametrize("probe,cfg", [("mlp", {"epochs": 10, "lr": 1e-3, "batch_size": 64}),
                                       ("linear", {"epochs": 10, "batch_size": 64})])
def test_random_labels_give_chance_on_held_out(probe, cfg):
    g = torch.Generator().manual_seed(3)
    x, xt = torch.randn(300, 32, generator=g), torch.randn(2000, 32, generator=g)
    y, yt = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (2000,), generator=g)
    r = evaluate_features(x, y, xt, yt, probe=probe, num_classes=4, device="cpu", **cfg)
    assert abs(r["accuracy"] - 0.25) < 0.05  # sd of chance accuracy on 2000 is 0.01


def unit_rows_numpy(x):
    """Rows scaled to unit ℓ2 norm, by hand in float64 numpy (independent of torch's F.normalize)."""
    a = x.double().numpy()
    return torch.from_numpy(a / np.sqrt((a * a).sum(axis=1, keepdims=True))).float()


def reference_alone(x, y, xt, d, hidden, c, seed, epochs, lr, bs, normalize=False, dropout=0.0):
    """A second implementation: nn.Sequential + torch.optim.Adam, same init law and shuffle stream. With
    normalize, features are scaled to unit norm by hand (numpy); with dropout p, the first hidden layer's
    ReLU output is multiplied by the released probe's mask law: per step, u = rand(B, h1) from the probe's
    dropout stream, kept (×1/(1-p)) where u >= p."""
    if normalize:
        x, xt = unit_rows_numpy(x), unit_rows_numpy(xt)
    g = torch.Generator().manual_seed(seed)
    dims, mods = [d, *hidden, c], []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        w = torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=g)
        b = torch.empty(fan_out).uniform_(-bound, bound, generator=g)
        lin = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            lin.weight.copy_(w.t())
            lin.bias.copy_(b)
        mods += [lin, nn.ReLU()]
    net = nn.Sequential(*mods[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    drops = torch.Generator().manual_seed(derived_seed("probe-dropout", seed))

    def forward(inp, train):
        if not hidden:
            return net(inp)
        h = net[1](net[0](inp))  # first Linear + ReLU
        if train and dropout:
            h = h * (torch.rand(h.shape, generator=drops) >= dropout).float() / (1 - dropout)
        return net[2:](h)

    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=shuffle)
        for s in range(0, len(x), bs):
            i = perm[s : s + bs]
            opt.zero_grad()
            F.cross_entropy(forward(x[i], True), y[i]).backward()
            opt.step()
    with torch.no_grad():
        return forward(xt, False).argmax(1), net


BF16_WEIGHT_TOL = 0.07  # see test_bf16_probe_stays_within_measured_tolerance_of_fp32


@pytest.mark.parametrize("hidden", [(512, 256), ()])
def test_batched_probes_equal_each_probe_trained_alone(hidden):
    x, y = blobs(150, d=24, sep=0.6)
    xt, yt = blobs(200, d=24, sep=0.6, seed=1)
    y_rand = torch.randint(0, 4, (150,), generator=torch.Generator().manual_seed(9))
    feats = [x, x[:, :16], x]  # different D, labels and seeds per probe
    tests = [xt, xt[:, :16], xt]
    labels = [y, y, y_rand]
    seeds = [0, 1, 2]
    # 150 % 32 != 0: a short last batch; fp32 pinned (the reference is fp32); the released probe's normalised
    # input and dropout included
    cfg = dict(hidden=hidden, epochs=4, lr=1e-3, batch_size=32, amp=False)
    batched = train_probes(feats, labels, tests, yt, num_classes=4, seeds=seeds, device="cpu", **cfg)
    for p in range(3):
        ref_pred, _ = reference_alone(feats[p], labels[p], tests[p], feats[p].shape[1], hidden, 4, seeds[p], 4, 1e-3, 32,
                                      normalize=True, dropout=0.5)
        assert (batched[p].predictions == ref_pred).float().mean() >= 0.99
        assert batched[p].accuracy == pytest.approx(float((ref_pred == yt).float().mean()), abs=0.01)
        alone = train_probes(feats[p], labels[p], tests[p], yt, num_classes=4, seeds=[seeds[p]], device="cpu", **cfg)[0]
        assert (alone.predictions == batched[p].predictions).float().mean() >= 0.99


@pytest.mark.parametrize("probe,normalize,dropout", [("mlp", True, 0.5), ("mlp-raw", False, 0.0)])
def test_batched_weights_match_reference_closely(probe, normalize, dropout):
    """fp32 pinned (amp=False): the reference is an fp32 loop, and bf16 would differ by far more than 1e-5."""
    x, y = blobs(96, d=8, sep=1.0)
    x = x * torch.linspace(0.05, 40.0, 96)[:, None]  # row norms over three decades: normalisation matters
    xt, _ = blobs(32, d=8, seed=1)
    _, net = reference_alone(x, y, xt, 8, (512, 256), 4, 5, 3, 1e-3, 32, normalize=normalize, dropout=dropout)
    from stealkit.probes.evaluate import probe_config_class

    res = train_probes([x, x], y, [xt, xt], torch.zeros(32, dtype=torch.long), num_classes=4, seeds=[7, 5],
                       device="cpu", config_class=probe_config_class(probe), epochs=3, lr=1e-3, batch_size=32, amp=False)
    assert isinstance(res[1].classifier, nn.Sequential)
    exported = res[1].classifier
    for a, b in zip(exported.parameters(), net.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_released_probe_equals_raw_probe_on_features_normalised_by_hand():
    """`mlp` on raw features == `mlp-raw` with the same dropout on numpy-normalised features (a probe that
    normalised anything else, or in another place, would drift apart); and it ignores each row's scale."""
    x, y = blobs(200, d=16, sep=0.8)
    xt, yt = blobs(100, d=16, sep=0.8, seed=1)
    scale = torch.exp(torch.randn(200, 1, generator=torch.Generator().manual_seed(4)) * 2)  # norms from ~0.02× to ~50×
    cfg = dict(epochs=6, lr=1e-3, batch_size=64, amp=False)
    released = evaluate_features(x * scale, y, xt, yt, probe="mlp", device="cpu", **cfg)
    by_hand = evaluate_features(unit_rows_numpy(x), y, unit_rows_numpy(xt), yt, probe="mlp-raw", device="cpu",
                                dropout=0.5, **cfg)
    assert torch.equal(released["predictions"], by_hand["predictions"])
    assert released["config"]["normalize"] is True and released["config"]["dropout"] == 0.5
    raw = evaluate_features(x * scale, y, xt, yt, probe="mlp-raw", device="cpu", dropout=0.5, **cfg)
    assert not torch.equal(raw["predictions"], released["predictions"])  # the scales do reach a raw probe


def test_dropout_is_training_only_and_keeps_the_expected_fraction():
    from stealkit.probes.mlp import dropout_generators, dropout_scales

    s = dropout_scales(dropout_generators([0, 1]), 256, 512, 0.5, "cpu")
    assert s.shape == (2, 256, 512) and set(s.unique().tolist()) == {0.0, 2.0}
    assert abs(float((s == 0).float().mean()) - 0.5) < 0.01  # 262,144 Bernoulli draws: sd 0.001
    assert not torch.equal(s[0], s[1])  # each probe its own stream
    x, y = blobs(128, d=8)
    r = train_probes(x, y, x, y, device="cpu", epochs=3, lr=1e-3, batch_size=64, amp=False)[0]
    clf = r.classifier
    assert not clf.training  # exported in eval mode: dropout off
    with torch.no_grad():
        again = clf(x * 3.0).argmax(1)  # raw features in, the exported probe normalises
    assert torch.equal(again, r.predictions) and torch.equal(clf(x).argmax(1), again)


def test_bf16_probe_stays_within_measured_tolerance_of_fp32(monkeypatch):
    """On a CPU with bf16 units the probe trains in bf16 autocast (amp=True). Measured on blobs like these
    (5 data seeds, 20 epochs, lr 1e-3; Xeon with AMX-BF16, torch 2.14.1): the largest weight difference
    between bf16 and fp32 was 0.022-0.035, predictions agreed on 100% of test points and accuracies were
    equal. The bounds (2× the largest difference, 95% agreement, 3 points) leave a margin. Forced on with
    STEALKIT_BF16=on it runs on any CPU (emulated where there are no bf16 units)."""
    x, y = blobs(256, d=16, sep=0.8)
    xt, yt = blobs(256, d=16, sep=0.8, seed=1)
    monkeypatch.setenv("STEALKIT_BF16", "on")
    bf = train_probes(x, y, xt, yt, device="cpu", epochs=20, lr=1e-3, batch_size=64, amp=True)[0]
    fp = train_probes(x, y, xt, yt, device="cpu", epochs=20, lr=1e-3, batch_size=64, amp=False)[0]
    assert bf.config["bf16"] is True and fp.config["bf16"] is False
    worst = max(float((a - b).detach().abs().max()) for a, b in zip(bf.classifier.parameters(), fp.classifier.parameters()))
    assert 0 < worst < BF16_WEIGHT_TOL
    assert float((bf.predictions == fp.predictions).float().mean()) >= 0.95
    assert abs(bf.accuracy - fp.accuracy) <= 0.03


def test_eval_every_records_history():
    x, y = blobs(128, d=8)
    r = train_probes(x, y, x, y, device="cpu", epochs=4, eval_every=2, lr=1e-3, batch_size=64)[0]
    assert [h["epoch"] for h in r.history] == [2, 4]
    assert r.history[-1]["test_accuracy"] == pytest.approx(r.accuracy)


def test_prediction_agreement():
    assert torch.get_num_threads() == 1
    assert prediction_agreement(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 3])) == 0.75
    with pytest.raises(ValueError):
        prediction_agreement(torch.tensor([0]), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- features and encoders


def tiny_set(n, seed, name):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 3, ["a", "b", "c"], name)


def test_feature_cache_hit_and_changed_encoder_miss(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder("resnet18").eval()
    images = tiny_set(6, 0, "toy:train")
    cache = FeatureCache(tmp_path)
    f1 = cache.features(enc, images, device="cpu")
    assert f1.dtype == torch.float32 and f1.shape == (6, enc.feature_dim) and cache.misses == 1
    f2 = cache.features(enc, images, device="cpu")
    assert cache.hits == 1 and torch.equal(f1, f2)
    # same weights in a fresh module: same fingerprint, a hit
    twin = build_encoder("resnet18")
    twin.load_state_dict(enc.state_dict())
    assert encoder_fingerprint(twin) == encoder_fingerprint(enc)
    # a retrained (changed) encoder misses and gets its own features
    with torch.no_grad():
        next(enc.parameters()).add_(0.01)
    assert encoder_fingerprint(twin) != encoder_fingerprint(enc)
    f3 = cache.features(enc, images, device="cpu")
    assert cache.misses == 2 and not torch.equal(f1, f3)
    # another dataset name or N misses too
    assert cache.get(encoder_fingerprint(twin), "toy:test", 6) is None
    assert cache.get(encoder_fingerprint(twin), "toy:train", 5) is None


def test_evaluate_encoders_batches_and_twins_agree(tmp_path):
    """Twins agree, and every name gets its own encoder's probe: each result equals a probe trained alone by
    the second implementation (`reference_alone`) on features extracted by hand (the encoder called directly),
    including an encoder with other weights and another width, whose result must differ from the victim's.
    fp32 pinned (amp=False): the reference is an fp32 loop."""
    torch.manual_seed(0)
    victim = build_encoder("resnet18")
    twin = build_encoder("resnet18")
    twin.load_state_dict(victim.state_dict())
    other = build_encoder("cnn_tiny")  # other weights, 64-d features
    train, test = tiny_set(30, 1, "toy:train"), tiny_set(12, 2, "toy:test")
    downstream = {"toy": (train, test)}
    encoders = {"victim": victim, "other": other, "stolen": twin}  # the odd one in the middle of the batch
    res = evaluate_encoders(encoders, downstream, probe="mlp", device="cpu", cache=tmp_path, epochs=2, batch_size=16,
                            lr=1e-3, amp=False)
    a, b = res["victim"]["toy"], res["stolen"]["toy"]
    assert a["config"]["probes_in_batch"] == 3 and a["feature_dim"] == 512 and a["n_test"] == 12
    assert prediction_agreement(a["predictions"], b["predictions"]) == 1.0 and a["accuracy"] == b["accuracy"]
    assert res["other"]["toy"]["feature_dim"] == 64
    hand = {}
    for name, enc in encoders.items():
        with torch.no_grad():
            tr, te = enc.eval()(train.images).float(), enc(test.images).float()
        pred, net = reference_alone(tr, train.labels, te, tr.shape[1], (512, 256), 3, 0, 2, 1e-3, 16, normalize=True, dropout=0.5)
        with torch.no_grad():
            logits = net(unit_rows_numpy(te))
        hand[name] = (pred, logits)
        r = res[name]["toy"]
        assert torch.equal(torch.as_tensor(r["predictions"]).long(), pred), name
        assert r["accuracy"] == pytest.approx(float((pred == test.labels).float().mean()), abs=1e-6), name
    # the other encoder's probe really is another one: its reference logits differ from the victim's, and so
    # would the result if the names were crossed
    assert not torch.allclose(hand["other"][1], hand["victim"][1], atol=1e-3)
    assert not torch.equal(hand["other"][0], hand["victim"][0])  # measured: all 0 vs all 2 (untrained features)
    assert torch.equal(hand["victim"][1], hand["stolen"][1])
    knn = evaluate_encoders({"victim": victim, "other": other}, downstream, probe="knn", device="cpu", cache=tmp_path, k=5)
    for name, enc in (("victim", victim), ("other", other)):  # a kNN on the hand-extracted features, name by name
        with torch.no_grad():
            ref = knn_predict(enc(train.images).float(), train.labels, enc(test.images).float(), k=5, num_classes=3)
        assert torch.equal(torch.as_tensor(knn[name]["toy"]["predictions"]).long(), ref.long()), name
        assert knn[name]["toy"]["accuracy"] == pytest.approx(float((ref == test.labels).float().mean()), abs=1e-6)
