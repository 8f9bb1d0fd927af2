"""Ownership verification inside the experiment runner: `verify:` in a config puts dataset-inference and
watermark p-values into results.json and the report; unknown keys fail with a clear message."""

from __future__ import annotations

import json

import pytest
import torch

from scipy.stats import binomtest, wilcoxon
from scipy.stats import t as student_t

from stealkit.experiment.config import ExperimentConfig
from stealkit.experiment.victims import load_data
from stealkit.models.checkpoint import load_encoder
from stealkit.pretrain.config import DataSpec
from stealkit.experiment.verification import parse_verify, verify_rows
from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder
from stealkit.verify.watermark import head_path, load_watermark_head, rotation_head, save_watermarked

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _verify_block(**extra) -> dict:
    return {
        "dataset_inference": {
            "private": {"name": "synthetic", "split": "train", "limit": 120, "size": SIZE},
            "public": {"name": "synthetic", "split": "train", "limit": 120, "seed": 1, "size": SIZE},
            "n_components": 2,
        },
        "watermark": {"images": {"name": "synthetic", "split": "test", "limit": 40, "size": SIZE}},
        **extra,
    }


@pytest.fixture
def checkpoints(tmp_path):
    torch.manual_seed(0)
    victim = build_encoder("cnn_tiny", input_size=SIZE)
    save_watermarked(victim, rotation_head(victim.feature_dim, 4, 32), tmp_path / "victim_wm", dataset="synthetic:train")
    torch.manual_seed(1)
    save_encoder(build_encoder("cnn_tiny", input_size=SIZE), tmp_path / "independent", dataset="other")
    return tmp_path / "victim_wm", tmp_path / "independent"


def test_runner_writes_verification_p_values(tmp_path, checkpoints, monkeypatch):
    from stealkit.experiment.runner import run_experiment

    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))
    victim, independent = checkpoints
    cfg = ExperimentConfig(
        name="verify_tiny",
        device="cpu",
        victim={"label": "tiny", "checkpoint": str(victim)},
        attacks=[
            {"name": "stolenencoder", "config": {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32}},
            {"name": "cont-steal", "config": {"arch": "cnn_tiny", "epochs": 1, "batch_size": 32}},
        ],
        surrogate={"name": "synthetic", "split": "test", "limit": 64, "size": SIZE},
        downstream=[{"name": "digits", "train_limit": 100, "test_limit": 50}],
        probe={"kind": "linear", "config": {"epochs": 3}},
        verify=_verify_block(independent={"label": "independent", "checkpoint": str(independent)}, victim=True),
        progress=False,
    )
    run_dir = tmp_path / "run"
    run_experiment(cfg, run_dir, echo=lambda *a, **k: None)
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["rows"]) == 2
    for row in results["rows"]:
        v = row["verification"]
        for key in ("dataset_inference", "watermark", "dataset_inference (independent)", "watermark (victim)"):
            assert 0.0 <= v[key]["p_value"] <= 1.0, key
            assert v[key]["verdict"]
        assert v["watermark"]["trials"] == 4 * 40
        assert v["dataset_inference"]["n_train"] + v["dataset_inference"]["n_fit"] == 120
        # every dataset-inference p-value is the one-sided Student t-test's for the t and sample sizes reported
        # (scipy's t law); every watermark's binomial p is scipy's binomtest on the counts reported
        for key in ("dataset_inference", "dataset_inference (independent)", "dataset_inference (victim)"):
            d = v[key]
            assert d["p_value"] == pytest.approx(student_t.sf(d["t_statistic"], d["n_train"] + d["n_test"] - 2), rel=1e-9), key
        for key in ("watermark", "watermark (victim)"):
            w = v[key]
            assert w["chance"] == 0.25 and w["accuracy"] == pytest.approx(w["correct"] / w["trials"])
            assert w["p_binomial"] == pytest.approx(binomtest(w["correct"], w["trials"], 0.25, alternative="greater").pvalue, rel=1e-9), key
    # the victim's reference is the same for every row of that victim...
    assert results["rows"][0]["verification"]["watermark (victim)"] == results["rows"][1]["verification"]["watermark (victim)"]
    # ...and equals an independent count: the victim and its head called directly on torch.rot90 turns of the
    # same 40 images, per-image hits, scipy's one-sided Wilcoxon (images at exactly chance dropped)
    images = load_data(DataSpec(name="synthetic", split="test", limit=40, size=SIZE), None).images
    enc, head = load_encoder(victim), load_watermark_head(head_path(victim))
    with torch.no_grad():
        hits = sum((head(enc(torch.rot90(images, r, dims=(2, 3)))).argmax(1) == r).double() for r in range(4))
    ref = results["rows"][0]["verification"]["watermark (victim)"]
    assert ref["correct"] == int(hits.sum())
    d = (hits / 4 - 0.25).numpy()
    assert ref["p_value"] == pytest.approx(wilcoxon(d[d != 0], alternative="greater").pvalue if (d != 0).any() else 1.0, rel=1e-9)
    report = (run_dir / "report.md").read_text()
    for col in ("dataset_inference p", "watermark p", "dataset_inference (independent) p"):
        assert col in report
    summary = json.loads((run_dir / "verification.json").read_text())
    assert len(summary["rows"]) == 2


def test_watermark_skipped_without_head(tmp_path, checkpoints):
    """A victim without a .wmhead file beside it gets no watermark p-value (a '—' in the report), not an error."""
    _, independent = checkpoints
    run = _stub_run(tmp_path, str(independent), _verify_block())
    from stealkit.models.checkpoint import load_encoder

    from stealkit.experiment.rows import Row, RowResult

    enc = load_encoder(independent)
    row = Row(victim={"checkpoint": str(independent)}, attack={"name": "stolenencoder"}, surrogate={}, defence=None, sweep=None)
    rows = [RowResult(row=row, key="r0", label="self", victim="v", queries=0, cost=0.0, surrogate="-", surrogate_size=0, encoder=enc)]
    verify_rows(run, {row.victim_key: (enc, {"checkpoint": str(independent)})}, rows, "cpu")
    v = rows[0].verification
    assert v["watermark"]["p_value"] is None and "no watermark head" in v["watermark"]["skipped"]
    d = v["dataset_inference"]
    assert d["p_value"] == pytest.approx(student_t.sf(d["t_statistic"], d["n_train"] + d["n_test"] - 2), rel=1e-9)


def _memorise(images: torch.Tensor, seed: int, classes: int = 4, epochs: int = 40) -> torch.nn.Module:
    """A cnn_tiny encoder trained to fit random labels on `images`: it memorises them, so its representations
    of exactly these images sit in tight clusters (what dataset inference detects)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    labels = torch.randint(0, classes, (len(images),), generator=g)
    enc, head = build_encoder("cnn_tiny", input_size=SIZE), torch.nn.Linear(64, classes)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], 3e-3)
    for _ in range(epochs):
        for i in range(0, len(images), 64):
            loss = torch.nn.functional.cross_entropy(head(enc(images[i : i + 64])), labels[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return enc.eval()


def test_verify_rows_tells_a_copy_from_an_independent_encoder(tmp_path):
    """A case whose answer is known: the victim memorised its private images; one row holds an exact copy of
    it (what a perfect theft gives), another an encoder that memorised other images of the same distribution.
    Dataset inference through verify_rows must call the copy stolen (p tiny, the same result as the victim's
    own reference) and the other independent, and each p-value must equal scipy's ttest_ind (pooled variance,
    one-sided) on the log-likelihoods of a mixture fitted by hand (sklearn) on the representations."""
    import copy

    from scipy.stats import ttest_ind
    from sklearn.mixture import GaussianMixture

    from stealkit.experiment.rows import Row, RowResult

    torch.set_num_threads(1)
    private_spec = {"name": "synthetic", "split": "train", "limit": 128, "size": SIZE}
    private = load_data(DataSpec(**private_spec), None).images
    victim = _memorise(private, 0)
    other = load_data(DataSpec(name="synthetic", split="test", limit=128, size=SIZE), None).images
    independent = _memorise(other, 1)
    block = {"dataset_inference": {"private": private_spec, "public": {**private_spec, "seed": 1},
                                   "n_components": 4, "views": "none"}, "victim": True}
    run = _stub_run(tmp_path, "unused", block)
    row = Row(victim={"label": "memoriser"}, attack={"name": "stolenencoder"}, surrogate={}, defence=None, sweep=None)
    rows = [RowResult(row=row, key=k, label=k, victim="v", queries=0, cost=0.0, surrogate="-", surrogate_size=0, encoder=e)
            for k, e in (("copy", copy.deepcopy(victim)), ("independent", independent))]
    verify_rows(run, {row.victim_key: (victim, {})}, rows, "cpu")
    got_copy, got_ind = rows[0].verification["dataset_inference"], rows[1].verification["dataset_inference"]
    assert got_copy["p_value"] < 1e-6 and got_copy["verdict"].startswith("stolen")
    assert got_ind["p_value"] > 0.01 and got_ind["verdict"].startswith("independent")
    assert rows[0].verification["dataset_inference (victim)"]["p_value"] == got_copy["p_value"]

    # the same test by hand: the seeded split, features normalised in float64, sklearn's mixture, scipy's t-test
    public = load_data(DataSpec(**{**private_spec, "seed": 1}), None).images
    seen = {x.numpy().tobytes() for x in private}
    public = public[torch.tensor([x.numpy().tobytes() not in seen for x in public])]
    assert got_copy["n_test"] == len(public) and got_copy["public_dropped_as_private"] == 128 - len(public)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(0))
    fit, train = private[perm[:64]], private[perm[64:]]
    for enc, got in ((victim, got_copy), (independent, got_ind)):
        def reps(x):
            with torch.no_grad():
                f = enc(x).double()
            return (f / f.norm(dim=1, keepdim=True)).numpy()

        gmm = GaussianMixture(4, covariance_type="diag", random_state=0, reg_covar=1e-6, max_iter=1000).fit(reps(fit))
        a, b = gmm.score_samples(reps(train)), gmm.score_samples(reps(public))
        ref = ttest_ind(a, b, equal_var=True, alternative="greater")
        # rel 1e-4: stealkit normalises in float32, this in float64 (features differ by ~1e-7)
        assert got["t_statistic"] == pytest.approx(ref.statistic, rel=1e-4)
        assert got["p_value"] == pytest.approx(ref.pvalue, rel=1e-4, abs=1e-30)
        assert got["mean_ll_train"] == pytest.approx(a.mean(), rel=1e-4) and got["mean_ll_test"] == pytest.approx(b.mean(), rel=1e-4)


def _stub_run(tmp_path, checkpoint: str, verify: dict):
    class Run:
        pass

    run = Run()
    run.cfg = ExperimentConfig(victim={"checkpoint": checkpoint}, verify=verify, progress=False)
    run.dir, run.echo = tmp_path, (lambda *a, **k: None)
    run.metric = lambda **k: None
    return run


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"dataset_inference": {"public": {"name": "synthetic"}, "alpah": 0.1}}, "verify.dataset_inference.alpah: unknown key"),
        ({"watermark": {"images": {"name": "synthetic", "splt": "test"}}}, "verify.watermark.images.splt: unknown key"),
        ({"dataset_inference": {"public": {"name": "synthetic"}}, "membership": {}}, "verify.membership: unknown key"),
        ({"independent": {"label": "x"}, "watermark": {"images": {"name": "synthetic"}}}, "exactly one of 'checkpoint' or 'pretrain'"),
        ({"victim": True}, "at least one of 'dataset_inference' or 'watermark'"),
    ],
)
def test_bad_verify_keys_fail_clearly(raw, needle):
    with pytest.raises(ValueError) as exc:
        parse_verify(raw)
    assert needle in str(exc.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ValueError, match=r"allowed there: .*fit_on.*threshold"):
        parse_verify({"dataset_inference": {"public": {"name": "synthetic"}, "alpah": 0.1}})


def test_verify_rows_fails_before_work_on_unknown_key(tmp_path, checkpoints):
    victim, _ = checkpoints
    run = _stub_run(tmp_path, str(victim), {"dataset_inference": {"public": {"name": "synthetic"}}, "bogus": 1})
    with pytest.raises(ValueError, match="verify.bogus: unknown key"):
        verify_rows(run, {}, [], "cpu")
