"""Ownership verification in a tiny CPU setting: dataset inference and the rotation watermark."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from stealkit.data.embedded import load_digits_set, make_synthetic
from stealkit.models.encoder import build_encoder
from stealkit.verify.dataset_inference import dataset_inference, welch_greater
from stealkit.verify.watermark import (
    embed_watermark,
    head_path,
    load_watermark_head,
    rotate,
    save_watermarked,
    watermark_accuracy,
)

SIZE = 16  # 16×16 images keep every training run here to a few seconds on one core


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _memorise(images: torch.Tensor, seed: int, classes: int = 4, epochs: int = 40) -> nn.Module:
    """A cnn_tiny encoder that has memorised `images`: trained to fit *random* labels (pure memorisation,
    no generalisation), so its representations of its training images sit in tight clusters."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    labels = torch.randint(0, classes, (len(images),), generator=g)
    enc, head = build_encoder("cnn_tiny", input_size=SIZE), nn.Linear(64, classes)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], 3e-3)
    for _ in range(epochs):
        for i in range(0, len(images), 64):
            loss = nn.functional.cross_entropy(head(enc(images[i : i + 64])), labels[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return enc.eval()


@pytest.fixture(scope="module")
def di_setting():
    torch.set_num_threads(1)  # module fixtures run before the function-scoped thread fixtures
    pool = make_synthetic(26, seed=11, size=SIZE).images  # 260 images of one distribution
    private, public = pool[:128], pool[128:256]
    other = make_synthetic(13, seed=12, size=SIZE).images[:128]  # another draw, for the independent encoder
    return private, public, _memorise(private, 0), _memorise(other, 1)


def test_welch_matches_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 2.0, 40)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t_ref = (a.mean() - b.mean()) / np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    from scipy.stats import t as student_t

    t, p = welch_greater(a, b)
    assert t == pytest.approx(t_ref) and p == pytest.approx(student_t.sf(t_ref, dof))


@pytest.mark.parametrize("fit_on", ["victim", "suspect"])
def test_dataset_inference_victim_small_p_independent_large_p(di_setting, fit_on):
    """On the plain images (views="none"): the memorising victim is called stolen with a tiny p; the
    independent encoder is not (p above the 1% threshold; its p-value is a draw under H0, so a fixed bar above
    the threshold, such as 0.05, fails on some machines' floating-point sums)."""
    private, public, victim, independent = di_setting
    own = dataset_inference(victim, victim, private, public, n_components=4, fit_on=fit_on, views="none")
    assert own.p_value < 1e-6 and own.stolen and own.mean_ll_train > own.mean_ll_test
    other = dataset_inference(victim, independent, private, public, n_components=4, fit_on=fit_on, views="none")
    assert other.p_value > other.alpha == 0.01 and not other.stolen
    assert other.n_fit == other.n_train == 64 and other.n_test == 128
    assert "independent" in other.verdict and json.dumps(other.to_dict())


def _dataset_inference_by_hand(suspect, private, public, seed=0, n_components=20):
    """The released script's default pipeline written out again from its description, sharing only the
    RandomResizedCrop views with stealkit: split the private images by a seeded permutation, fit sklearn's
    GaussianMixture (diag) on the suspect's L2-normalised (float64, by hand) representations of the fit half,
    score the other half and the public images, scipy's one-sided pooled-variance t-test."""
    from scipy.stats import ttest_ind
    from sklearn.mixture import GaussianMixture

    from stealkit.verify.dataset_inference import crop_views

    n = len(private)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit, train = crop_views(private[perm[: n // 2]], seed), crop_views(private[perm[n // 2 :]], seed + 1)

    def reps(images):
        with torch.no_grad():
            f = suspect.eval()(images).double()
        return (f / f.norm(dim=1, keepdim=True)).numpy()

    gmm = GaussianMixture(n_components, covariance_type="diag", random_state=seed, reg_covar=1e-6, max_iter=1000).fit(reps(fit))
    a, b = gmm.score_samples(reps(train)), gmm.score_samples(reps(crop_views(public, seed + 2)))
    res = ttest_ind(a, b, equal_var=True, alternative="greater")
    return float(res.pvalue), float(res.statistic), a, b


def test_dataset_inference_defaults_are_the_released_scripts(di_setting):
    """fit on the suspect, RandomResizedCrop views, 20 diagonal components, Student's t (pooled variance):
    the result says so, and p, t and the mean log-likelihoods equal an independent computation (sklearn GMM
    + scipy ttest_ind on representations extracted and normalised by hand). The verdict follows the data:
    the memorising victim scores its own private images far above the public ones, the independent encoder
    does not. Measured (one core, this setting): victim p = 0.0149, t = 2.19, mean ll -156.6 vs -327.0;
    independent p = 0.598, t = -0.25. The tolerance rel 1e-4: stealkit normalises in float32 and the reference
    in float64, which moves the features by ~1e-7 and the fitted mixture's log-likelihoods by ~1e-6 (measured)."""
    from scipy.stats import ttest_ind

    private, public, victim, independent = di_setting
    r = dataset_inference(None, victim, private, public)
    assert (r.fit_on, r.views, r.test, r.covariance_type, r.n_components) == ("suspect", "crop", "student", "diag", 20)
    assert "RandomResizedCrop" in r.to_dict()["variant"] and "Student" in r.variant
    assert (r.n_fit, r.n_train, r.n_test) == (64, 64, 128)
    p, t, a, b = _dataset_inference_by_hand(victim, private, public)
    assert r.p_value == pytest.approx(p, rel=1e-4) and r.t_statistic == pytest.approx(t, rel=1e-4)
    assert r.mean_ll_train == pytest.approx(a.mean(), rel=1e-4) and r.mean_ll_test == pytest.approx(b.mean(), rel=1e-4)
    assert r.mean_ll_train > r.mean_ll_test + 50  # the victim has memorised its private set
    ind = dataset_inference(None, independent, private, public, alpha=0.05)
    p_ind, t_ind, _, _ = _dataset_inference_by_hand(independent, private, public)
    assert ind.p_value == pytest.approx(p_ind, rel=1e-4) and ind.t_statistic == pytest.approx(t_ind, rel=1e-4)
    # the verdict at 5%: the victim (p ≈ 0.015) is stolen, the encoder that never saw the private set (p ≈ 0.6) is not
    assert dataset_inference(None, victim, private, public, alpha=0.05).stolen and not ind.stolen
    assert r.p_value < 0.05 < 0.3 < ind.p_value
    a, b = np.random.default_rng(0).normal(1, 1, 20), np.random.default_rng(1).normal(0, 3, 30)
    from stealkit.verify.dataset_inference import t_greater

    assert t_greater(a, b)[1] == pytest.approx(ttest_ind(a, b, equal_var=True).pvalue / 2)


def test_dataset_inference_gmm_cache_not_fooled_by_a_reused_id(di_setting):
    """The cache is keyed by id(); CPython reuses the id of a freed tensor (e.g. a fresh slice per call), so an
    entry must not be served for other images that happen to get the same id. Simulated here by filing the
    entry of `private` under the id of `other`."""
    private, public, victim, _ = di_setting
    other = public.flip(0).clone()  # other images in the role of the private set
    cache: dict = {}
    first = dataset_inference(victim, victim, private, public, n_components=4, fit_on="victim", gmm_cache=cache)
    (key,) = cache
    again = dataset_inference(victim, victim, private, public, n_components=4, fit_on="victim", gmm_cache=cache)
    assert again.mean_ll_train == first.mean_ll_train and len(cache) == 1  # a true hit is reused
    cache[(key[0], id(other), *key[2:])] = cache[key]
    fresh = dataset_inference(victim, victim, other, private, n_components=4, fit_on="victim")
    cached = dataset_inference(victim, victim, other, private, n_components=4, fit_on="victim", gmm_cache=cache)
    assert cached.mean_ll_train == pytest.approx(fresh.mean_ll_train) and cached.p_value == pytest.approx(fresh.p_value)


def test_dataset_inference_rejects_bad_arguments(di_setting):
    private, public, victim, _ = di_setting
    with pytest.raises(ValueError):
        dataset_inference(None, victim, private, public, fit_on="victim")
    with pytest.raises(ValueError):
        dataset_inference(victim, victim, private, public, fit_fraction=1.5)


def test_rotate_matches_rot90():
    x = torch.arange(2 * 3 * 4 * 4).view(2, 3, 4, 4)
    out = rotate(x.repeat(4, 1, 1, 1), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    for k in range(4):
        assert torch.equal(out[2 * k : 2 * k + 2], torch.rot90(x, k, dims=(2, 3)))
    two = rotate(x, torch.tensor([1, 0]), rotations=2)
    assert torch.equal(two[0], torch.rot90(x[0], 2, dims=(1, 2))) and torch.equal(two[1], x[1])


@pytest.fixture(scope="module")
def watermarked():
    torch.set_num_threads(1)
    train = load_digits_set("train", size=SIZE).images[:256]  # digits have an upright orientation
    cfg = {"arch": "cnn_tiny", "epochs": 10, "batch_size": 64, "lr": 3e-3, "augment": "crop+flip", "amp": False,
           "device": "cpu", "proj_hidden": 64, "proj_dim": 32, "head_hidden": 64, "task": "quarter"}
    enc, head, log = embed_watermark(train, cfg, progress=False)
    return enc, head, log, load_digits_set("test", size=SIZE).images[:100]


def test_watermark_present_in_victim_and_stolen_copy_chance_for_independent(watermarked):
    from stealkit.attacks.base import build_attack
    from stealkit.targets.local import LocalTarget
    import stealkit.attacks.loss_steal  # noqa: F401

    enc, head, log, check = watermarked
    assert log[-1]["rot_acc"] > log[0]["rot_acc"]
    own = watermark_accuracy(enc, head, check)
    assert own.accuracy > 0.4 and own.significant and own.trials == 400
    # the same numbers by hand: torch.rot90 turns, the encoder and head called directly, per-image hits,
    # scipy's one-sided Wilcoxon (images at exactly chance dropped) and binomial tests
    from scipy.stats import binomtest, wilcoxon

    with torch.no_grad():
        hits = sum((head(enc(torch.rot90(check, r, dims=(2, 3)))).argmax(1) == r).double() for r in range(4))
    assert own.correct == int(hits.sum()) and own.accuracy == pytest.approx(hits.sum().item() / 400)
    d = (hits / 4 - 0.25).numpy()
    assert own.p_value == pytest.approx(wilcoxon(d[d != 0], alternative="greater").pvalue, rel=1e-9)
    assert own.p_binomial == pytest.approx(binomtest(int(hits.sum()), 400, 0.25, alternative="greater").pvalue, rel=1e-9)
    for seed in (100, 101):
        torch.manual_seed(seed)
        independent = build_encoder("cnn_tiny", input_size=SIZE).eval()
        res = watermark_accuracy(independent, head, check)
        assert abs(res.accuracy - 0.25) < 0.05 and not res.significant
    surrogate = load_digits_set("train", size=SIZE).subset(list(range(256, 512)))
    stolen = build_attack("steal-mse", {"arch": "cnn_tiny", "epochs": 10, "batch_size": 32, "amp": False, "lr": 3e-3, "augment": "flip"})
    copy = stolen.steal(LocalTarget(enc), surrogate, device="cpu", progress=False).encoder
    assert watermark_accuracy(copy, head, check).significant


def test_watermark_checkpoint_round_trip_and_cli(watermarked, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stealkit.cli.app import app
    import stealkit.cli.verify_cmds  # noqa: F401
    from stealkit.models.checkpoint import load_encoder, read_sidecar, save_encoder

    enc, head, _, check = watermarked
    weights, hp = save_watermarked(enc, head, tmp_path / "victim")
    assert hp == head_path(weights) and read_sidecar(weights)["watermark"]["rotations"] == 4
    loaded = load_watermark_head(hp)
    assert watermark_accuracy(load_encoder(weights), loaded, check).accuracy == watermark_accuracy(enc, head, check).accuracy
    torch.manual_seed(5)
    save_encoder(build_encoder("cnn_tiny", input_size=SIZE), tmp_path / "indep")

    runner = CliRunner()
    r = runner.invoke(app, ["verify", "watermark", "--suspect", str(tmp_path / "victim.safetensors"), "--victim", str(weights),
                            "--data", "digits:test", "--limit", "100", "--size", str(SIZE), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "verdict: watermark present" in r.output
    r = runner.invoke(app, ["verify", "dataset-inference", "--victim", str(weights), "--suspect", str(tmp_path / "indep.safetensors"),
                            "--private", "digits:train", "--public", "digits:test", "--private-limit", "200", "--public-limit", "100",
                            "--components", "3", "--size", str(SIZE), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    # the CLI's p-value is the one-sided Student t-test's for the t and sample sizes it reports (scipy's t law)...
    from scipy.stats import t as student_t

    assert out["n_fit"] + out["n_train"] == 200 and out["n_test"] == 100
    assert out["p_value"] == pytest.approx(student_t.sf(out["t_statistic"], out["n_train"] + out["n_test"] - 2), rel=1e-9)
    # ...and the Python API on the same images (the CLI's random subsets, drawn again here) gives the same result
    from stealkit.data.registry import load_dataset
    from stealkit.models.checkpoint import load_encoder

    priv = load_dataset("digits", "train", size=SIZE).sample(200, seed=0).images
    pub = load_dataset("digits", "test", size=SIZE).sample(100, seed=1).images
    api = dataset_inference(load_encoder(weights), load_encoder(tmp_path / "indep.safetensors"), priv, pub, n_components=3)
    assert out["p_value"] == pytest.approx(api.p_value, rel=1e-9) and out["mean_ll_train"] == pytest.approx(api.mean_ll_train, rel=1e-9)
    assert out["stolen"] is False and out["verdict"].startswith("independent")  # an untrained encoder is not a copy (measured p = 0.28)
    # the one-command verdict with the watermark alone: one test, alpha not split, the p of the Python API on the
    # same public images (the CLI's first --watermark-limit of its public subset)
    r = runner.invoke(app, ["verify", "--victim", str(weights), "--suspect", str(weights), "--private", "digits:train", "--public",
                            "digits:test", "--private-limit", "50", "--public-limit", "100", "--watermark-limit", "60",
                            "--test", "watermark", "--size", str(SIZE), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert list(rep["tests"]) == ["watermark"] and rep["threshold"] == pytest.approx(0.01)
    own = watermark_accuracy(load_encoder(weights), loaded, pub[:60], alpha=0.01)
    assert rep["tests"]["watermark"]["p_value"] == pytest.approx(own.p_value, rel=1e-9) and rep["stolen"] is True
    # the watermark alone reads no private image: --private may be left out, and a private set that does not exist
    # is never opened; the p-value is the same (same public sample)
    for extra in ([], ["--private", "no-such-dataset:train"]):
        r = runner.invoke(app, ["verify", "--victim", str(weights), "--suspect", str(weights), "--public", "digits:test",
                                "--public-limit", "100", "--watermark-limit", "60", "--test", "watermark", "--size", str(SIZE),
                                "--device", "cpu", "--json", *extra])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["tests"]["watermark"]["p_value"] == pytest.approx(own.p_value, rel=1e-9)
    r = runner.invoke(app, ["verify", "--victim", str(weights), "--suspect", str(weights), "--public", "digits:test",
                            "--test", "alignment", "--size", str(SIZE), "--device", "cpu"])
    assert r.exit_code != 0 and "--private" in r.output  # the other tests still need it


def test_watermark_p_value_counts_images_not_predictions():
    """Per-image Wilcoxon signed-rank test against hand-computed exact values, and why the unit must be
    the image: images whose four predictions are all right or all wrong are 10 observations, not 40."""
    from scipy.stats import binomtest

    from stealkit.verify.watermark import per_image_p_value

    # differences +0.1, +0.2, -0.05, +0.3: ranks 2, 3, 1, 4, W+ = 9; of the 16 equally likely sign
    # patterns, {2,3,4} and {1,2,3,4} reach 9 or more: p = 2/16
    assert per_image_p_value(torch.tensor([0.35, 0.45, 0.2, 0.55]), 0.25) == pytest.approx(2 / 16)
    assert per_image_p_value(torch.ones(2), 0.25) == pytest.approx(0.25)  # all above: 0.5^n
    assert per_image_p_value(torch.full((5,), 0.25), 0.25) == 1.0 and per_image_p_value(torch.zeros(5), 0.25) > 0.9
    clustered = torch.tensor([1.0] * 4 + [0.0] * 6)  # 16/40 right: the binomial over 40 trials says p ≈ 0.02
    assert binomtest(16, 40, 0.25, alternative="greater").pvalue < 0.05 < per_image_p_value(clustered, 0.25)


def test_rotate_by_angle_matches_torchvision():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from stealkit.verify.watermark import rotate_by_angle

    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    angles = torch.tensor([0.0, 17.5, 90.0, 179.9, 211.0, 359.0])
    out = rotate_by_angle(x, angles)
    for i, a in enumerate(angles.tolist()):
        assert torch.equal(out[i], TF.rotate(x[i], a, interpolation=InterpolationMode.NEAREST))


def test_binary_watermark_is_the_default_with_the_released_head():
    """The blog's binary task (0–180° vs 180–360°) and the released WatermarkMLP (D-256-128-2)."""
    from stealkit.verify.watermark import WatermarkConfig, binary_views, rotation_head

    assert WatermarkConfig().task == "binary"
    head = rotation_head(64)
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [256, 128, 2] and head.task == "binary"
    views, labels = binary_views(torch.zeros(3, 3, 8, 8, dtype=torch.uint8) + 9, torch.Generator().manual_seed(1))
    assert views.shape == (6, 3, 8, 8) and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_binary_watermark_transfers_to_a_copy_not_to_an_independent_encoder(tmp_path):
    torch.set_num_threads(1)
    train = load_digits_set("train", size=SIZE).images[:256]
    cfg = {"arch": "cnn_tiny", "epochs": 20, "batch_size": 64, "lr": 3e-3, "augment": "crop+flip", "amp": False,
           "device": "cpu", "proj_hidden": 64, "proj_dim": 32, "weight": 3.0}
    enc, head, log = embed_watermark(train, cfg, progress=False)  # continuous angles: a harder task than quarter turns
    check = load_digits_set("test", size=SIZE).images[:100]
    own = watermark_accuracy(enc, head, check)
    assert own.task == "binary" and own.trials == 200 and own.chance == 0.5
    assert own.accuracy > 0.6 and own.significant
    torch.manual_seed(100)
    independent = build_encoder("cnn_tiny", input_size=SIZE).eval()
    res = watermark_accuracy(independent, head, check)
    assert not res.significant
    weights, hp = save_watermarked(enc, head, tmp_path / "victim")
    loaded = load_watermark_head(hp)
    assert loaded.task == "binary"
    assert watermark_accuracy(enc, loaded, check).accuracy == own.accuracy


def test_verify_suspect_combines_tests_counts_queries_and_splits_alpha(di_setting):
    """One report for a memorising victim and an independent encoder, both asked through a billed target:
    the victim is called stolen, the independent one is not, and the queries are what the tests embed:
    dataset inference 64 fit + 64 private + 128 public = 256 images, view alignment 3 views × 256 = 768."""
    from stealkit.targets.local import LocalTarget
    from stealkit.verify.suspect import verify_suspect

    private, public, victim, independent = di_setting
    own = verify_suspect(None, LocalTarget(victim), private, public, views=3, components=4, alpha=0.08, price_per_1000=2.0)
    assert set(own.tests) == {"dataset inference (GMM)", "view alignment"} and own.threshold == pytest.approx(0.04)
    assert own.tests["dataset inference (GMM)"]["queries"] == 256 and own.tests["view alignment"]["queries"] == 768
    assert own.queries == 1024 and own.cost == pytest.approx(2.048)
    # the same numbers as each test run on its own
    ref = dataset_inference(None, victim, private, public, n_components=4)
    assert own.tests["dataset inference (GMM)"]["p_value"] == pytest.approx(ref.p_value, rel=1e-6)
    # measured (one core): victim GMM p = 0.017, alignment p = 0.69 (a memorising, not contrastive, encoder: no
    # alignment signal); independent GMM p = 0.40, alignment p = 0.069. Bonferroni: each test at 0.08 / 2 = 0.04
    assert own.stolen and own.tests["dataset inference (GMM)"]["p_value"] < own.threshold
    other = verify_suspect(None, independent, private, public, views=3, components=4, alpha=0.08)
    assert other.queries == 0 and other.cost is None  # a local encoder: nothing billed
    assert not other.stolen and min(t["p_value"] for t in other.tests.values()) > other.threshold
    with pytest.raises(ValueError, match="unknown tests"):
        verify_suspect(None, victim, private, public, tests=("gmm",))


def test_verify_command_user_errors_are_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stealkit.cli import app
    from stealkit.models.checkpoint import save_encoder

    save_encoder(build_encoder("cnn_tiny", input_size=SIZE), tmp_path / "enc")
    monkeypatch.delenv("STEALKIT_API_KEY", raising=False)
    cases = {
        ("--suspect", str(tmp_path / "enc")): "needs --victim, --private, --public",
        ("--victim", str(tmp_path / "enc"), "--suspect", str(tmp_path / "nope"), "--private", "digits:train", "--public", "digits:test"):
            "no checkpoint there",
        ("--victim", str(tmp_path / "enc"), "--suspect", "http://127.0.0.1:9", "--private", "digits:train", "--public", "digits:test"):
            "put its key in $STEALKIT_API_KEY",
        ("--victim", str(tmp_path / "enc"), "--suspect", str(tmp_path / "enc"), "--private", "nosuchset:train", "--public", "digits:test"):
            "stealkit verify:",
        ("--victim", str(tmp_path / "enc"), "--suspect", str(tmp_path / "enc"), "--private", "digits:train", "--public", "digits:test",
         "--test", "gmm"): "choose dataset-inference, alignment or watermark",
        ("--victim", str(tmp_path / "enc"), "--suspect", str(tmp_path / "enc"), "--private", "digits:train", "--public", "digits:test",
         "--test", "watermark"): "the victim carries no watermark",
    }
    for args, message in cases.items():
        r = CliRunner().invoke(app, ["verify", *args])
        assert r.exit_code == 2 and message in r.output, (args, r.output)
        assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    r = CliRunner().invoke(app, ["verify"])
    assert "dataset-inference" in r.output and "--suspect" in r.output  # bare: the help with the subcommands


def test_normalized_head_is_blind_to_the_suspects_feature_scale(tmp_path):
    """A copy stolen from unit-norm answers has its own feature scale; the default head reads directions only,
    the released (raw) head does not. The flag survives save/load; a head written before it reads raw features."""
    from safetensors.torch import save_file

    from stealkit.verify.watermark import HEAD_FORMAT, WatermarkConfig, rotation_head, save_watermark_head

    assert WatermarkConfig().normalize
    torch.manual_seed(0)
    feats = torch.randn(64, 32)
    head = rotation_head(32, normalize=True)
    with torch.no_grad():
        assert torch.allclose(head(feats), head(7.3 * feats), atol=1e-5)
        plain = nn.Sequential(*list(head))  # the same layers, no normalisation: fed unit vectors by hand
        assert torch.allclose(head(feats), plain(feats / feats.norm(dim=1, keepdim=True)), atol=1e-6)
    raw = rotation_head(32)
    raw.load_state_dict(head.state_dict())
    with torch.no_grad():
        assert not torch.allclose(raw(feats), raw(7.3 * feats), atol=1e-3)
    assert load_watermark_head(save_watermark_head(head, tmp_path / "n.wmhead.safetensors")).normalize
    old = tmp_path / "old.wmhead.safetensors"  # format /2 without the flag
    meta = {"format": HEAD_FORMAT, "feature_dim": 32, "hidden": [256, 128], "classes": 2, "task": "binary"}
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(old), metadata={"stealkit": json.dumps(meta)})
    assert not load_watermark_head(old).normalize


def test_fine_tuning_with_preserve_keeps_the_given_encoders_features():
    """preserve > 0 anchors the fine-tuned encoder to the encoder as given: its features stay closer to the
    original than without the term (same seed, same steps); from scratch there is nothing to preserve."""
    import copy

    torch.set_num_threads(1)
    train = load_digits_set("train", size=SIZE).images[:128]
    check = load_digits_set("test", size=SIZE).images[:64]
    torch.manual_seed(3)
    base = build_encoder("cnn_tiny", input_size=SIZE).eval()
    cfg = {"arch": "cnn_tiny", "epochs": 4, "batch_size": 64, "lr": 3e-3, "augment": "crop+flip", "amp": False,
           "device": "cpu", "contrastive": False, "weight": 1.0}

    def drift(preserve: float) -> float:
        enc, _, _ = embed_watermark(train, {**cfg, "preserve": preserve}, copy.deepcopy(base), progress=False)
        with torch.no_grad():
            return (1 - torch.nn.functional.cosine_similarity(enc(check), base(check), dim=1)).mean().item()

    free, anchored = drift(0.0), drift(50.0)
    assert anchored < 0.5 * free, (anchored, free)
    with pytest.raises(ValueError, match="preserve"):
        embed_watermark(train, {**cfg, "preserve": 1.0}, None, progress=False)
