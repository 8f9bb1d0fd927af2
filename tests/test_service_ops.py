"""What operators expect, through a real server on loopback: Prometheus /metrics behind a
token, liveness and readiness, JSON access logs with request id and account but never the key, the
common embedding-API answer form and /v1/models, the OpenAPI bearer scheme, a defence /v1/model does not
name unless told to, an encoder object without a spec, settings from the environment, CLI errors.
"""

from __future__ import annotations

import base64
import io
import json
import logging

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stealkit.cli import app as cli
from stealkit.models.encoder import build_encoder, embed
from stealkit.service import Ledger, ServiceSettings, create_app
from stealkit.service.background import serve_in_thread
from stealkit.service.logs import JsonFormatter
from stealkit.service.testing import ledger_url
from stealkit.targets.remote import RemoteTarget


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("cnn_tiny").eval()


def raw_headers(key, x, accept="application/octet-stream"):
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream", "X-Array-Shape": ",".join(map(str, x.shape)), "Accept": accept}


def imgs(n, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in the metrics")


def test_metrics_need_the_token_and_count_what_the_ledger_bills(tmp_path, encoder):
    ledger = str(tmp_path / "l.sqlite")
    led = Ledger(ledger)
    alice, bob = led.create_account("alice"), led.create_account("bob", quota=2)
    app = create_app(ServiceSettings(ledger=ledger, device="cpu", metrics_token="s3cret", max_batch=8), encoder=encoder)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        for n in (2, 3):
            assert c.post("/v1/embeddings", content=imgs(n).numpy().tobytes(), headers=raw_headers(alice, imgs(n))).status_code == 200
        assert c.post("/v1/embeddings", content=imgs(3).numpy().tobytes(), headers=raw_headers(bob, imgs(3))).status_code == 402
        assert c.post("/v1/embeddings", content=imgs(9).numpy().tobytes(), headers=raw_headers(alice, imgs(9))).status_code == 413
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        text = c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text
    assert metric(text, "stealkit_requests_total", route="/v1/embeddings", status="200") == 2
    assert metric(text, "stealkit_refusals_total", status="402") == 1 and metric(text, "stealkit_refusals_total", status="413") == 1
    assert metric(text, "stealkit_images_total") == 5
    assert metric(text, "stealkit_request_seconds_count", route="/v1/embeddings") == 4
    assert metric(text, "stealkit_batch_images_sum") == 5 and metric(text, "stealkit_batch_images_count") >= 1
    billed = led.billed()
    assert metric(text, "stealkit_account_billed_queries", account="alice") == billed["alice"] == 5
    off = create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)
    with serve_in_thread(off) as url:
        r = httpx.get(url + "/metrics", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 404 and "metrics are off" in r.json()["detail"]


def test_liveness_readiness_and_openapi_security(tmp_path, encoder):
    ledger = str(tmp_path / "l.sqlite")
    app = create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as c:
        assert c.get("/livez").json() == {"status": "alive"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "reasons": [], "batching": "dynamic"}
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["BearerKey"] == {
            "type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key> (keys from `stealkit keys create`)"}
        assert {"BearerKey": []} in spec["paths"]["/v1/embeddings"]["post"]["security"]
        assert {"BearerKey": []} in spec["paths"]["/v1/usage"]["get"]["security"]
        assert "security" not in spec["paths"]["/readyz"]["get"]
        assert c.get("/docs").status_code == 200


def test_readiness_fails_when_the_ledger_is_unreachable(tmp_path, encoder):
    """PostgreSQL only: connections to the ledger's database are refused while the server runs."""
    import psycopg

    with ledger_url("postgresql", tmp_path) as url:
        key = Ledger(url).create_account("a")
        app = create_app(ServiceSettings(ledger=url, device="cpu"), encoder=encoder)
        server, _, name = url.rpartition("/")
        with serve_in_thread(app) as base, httpx.Client(base_url=base) as c, psycopg.connect(server + "/postgres", autocommit=True) as admin:
            assert c.get("/readyz").status_code == 200
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "not ready"
            assert any("ledger unreachable" in reason for reason in r.json()["reasons"])
            r = c.post("/v1/embeddings", content=imgs(2).numpy().tobytes(), headers=raw_headers(key, imgs(2)))
            assert r.status_code == 503 and "ledger is unavailable" in r.json()["detail"]  # not a 500
            assert c.get("/livez").status_code == 200
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            assert c.get("/readyz").status_code == 200
            assert c.post("/v1/embeddings", content=imgs(2).numpy().tobytes(), headers=raw_headers(key, imgs(2))).status_code == 200
        assert Ledger(url).usage("a").queries == 2


def test_a_failing_defence_is_a_json_500_on_a_connection_that_stays_usable(tmp_path, encoder):
    import socket

    def broken(features, *, images=None, account="anonymous"):
        raise RuntimeError("the accelerator fell over")

    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("a", quota=10)
    x = imgs(2)
    request = (f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/octet-stream\r\n"
               f"X-Array-Shape: 2,3,32,32\r\nContent-Length: {x.numel()}\r\n\r\n").encode() + x.numpy().tobytes()
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder, defence=broken)) as url:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as s:
            for _ in range(2):  # twice on one connection
                s.sendall(request)
                data = b""
                while b"}" not in data:
                    chunk = s.recv(65536)
                    assert chunk, "connection closed after a 500"
                    data += chunk
                assert data.startswith(b"HTTP/1.1 500") and b"nothing was billed" in data
    assert Ledger(ledger).records() == [] and Ledger(ledger).usage("a").remaining == 10


def test_access_log_is_json_with_request_id_and_account_never_the_key(tmp_path, encoder):
    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("carol")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("stealkit.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as url, httpx.Client(base_url=url) as c:
            ok = c.post("/v1/embeddings", content=imgs(2).numpy().tobytes(), headers={**raw_headers(key, imgs(2)), "X-Request-Id": "trace-7"})
            bad = c.get("/v1/usage", headers={"Authorization": f"Bearer {key}x"})
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_id = {d["request_id"]: d for d in lines}
    first = by_id["trace-7"]
    assert (first["account"], first["status"], first["billed"], first["images"], first["path"]) == ("carol", 200, 2, 2, "/v1/embeddings")
    assert by_id[bad.headers["x-request-id"]]["status"] == 401 and by_id[bad.headers["x-request-id"]]["account"] is None
    assert ok.headers["x-request-id"] == "trace-7" and all(d["logger"] == "stealkit.access" for d in lines)
    assert key not in stream.getvalue() and key[:20] not in stream.getvalue()


def test_common_embedding_api_form_and_models_list(tmp_path, encoder):
    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("dan")
    x = imgs(3, seed=4)
    pngs = []
    for im in x:
        buf = io.BytesIO()
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        pngs.append(base64.b64encode(buf.getvalue()).decode())
    want = embed(encoder, x)
    auth = {"Authorization": f"Bearer {key}"}
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/embeddings", json={"input": pngs, "model": "anything"}, headers=auth)
        body = r.json()
        assert r.status_code == 200 and body["object"] == "list" and body["model"] == "cnn_tiny"
        assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
        assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embedding"}
        assert torch.equal(torch.tensor([d["embedding"] for d in body["data"]], dtype=torch.float32), want)
        b64 = c.post("/v1/embeddings", json={"input": pngs, "encoding_format": "base64"}, headers=auth).json()
        decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]])
        assert np.array_equal(decoded, want.numpy())
        one = c.post("/v1/embeddings", json={"input": pngs[0]}, headers=auth).json()  # a single input
        assert len(one["data"]) == 1
        assert c.post("/v1/embeddings", json={"input": pngs, "dimensions": 3}, headers=auth).status_code == 422
        raw = c.post("/v1/embeddings?format=openai", content=x.numpy().tobytes(), headers=raw_headers(key, x, accept="application/json")).json()
        assert torch.equal(torch.tensor([d["embedding"] for d in raw["data"]]), want)
        assert c.post("/v1/embeddings?format=yaml", content=x.numpy().tobytes(), headers=raw_headers(key, x)).status_code == 422
        models = c.get("/v1/models", headers=auth).json()
        assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["cnn_tiny"]
        assert c.get("/v1/models").status_code == 401
    assert Ledger(ledger).usage("dan").queries == 3 + 3 + 1 + 3


class Plain(torch.nn.Module):
    """An encoder object without stealkit's spec (a wrapped third-party model)."""

    def __init__(self, with_dim: bool):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3)
        if with_dim:
            self.feature_dim = 5

    def forward(self, x):
        return self.conv(x.float() / 255).mean(dim=(2, 3))


@pytest.mark.parametrize("with_dim", [True, False])
def test_model_info_of_an_encoder_object_and_the_hidden_defence(tmp_path, with_dim):
    from stealkit.defences.topk import TopK

    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("eve")
    torch.manual_seed(0)
    enc = Plain(with_dim).eval()
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=enc, defence=TopK(2))) as url:
        info = httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {key}"})
        assert info.status_code == 200, info.text
        assert info.json()["defence"] == "undisclosed" and info.json()["feature_dim"] == 5 and info.json()["arch"] == "Plain"
        target = RemoteTarget(url, key)  # what `stealkit steal` does first
        assert target.feature_dim == 5 and target.embed(imgs(2)).shape == (2, 5)
        target.close()
    revealed = create_app(ServiceSettings(ledger=ledger, device="cpu", reveal_defence=True), encoder=enc, defence=TopK(2))
    with serve_in_thread(revealed) as url:
        assert httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {key}"}).json()["defence"] == "topk"


def test_settings_from_a_file_and_the_environment(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("checkpoint: victim.safetensors\nbatch_wait_ms: 5\ndefence: {name: topk, k: 3}\n")
    env = {"STEALKIT_SERVE_CONFIG": str(cfg), "STEALKIT_SERVE_LEDGER": "postgresql://u@h/db", "STEALKIT_SERVE_BATCH_WAIT_MS": "7",
           "STEALKIT_SERVE_REVEAL_DEFENCE": "true"}
    s = ServiceSettings.from_env(env)
    assert (s.checkpoint, s.ledger, s.batch_wait_ms, s.reveal_defence, s.defence) == ("victim.safetensors", "postgresql://u@h/db", 7.0, True, {"name": "topk", "k": 3})
    assert ServiceSettings.from_env(s.to_env()) == s  # what `serve --workers` hands its workers
    with pytest.raises(ValueError, match="max_batch"):
        ServiceSettings.from_env({"STEALKIT_SERVE_MAX_BATCH": "0"})


def test_cli_mistakes_are_short_errors(tmp_path):
    run = CliRunner().invoke
    r = run(cli, ["serve", "--checkpoint", str(tmp_path / "nope.safetensors")])
    assert r.exit_code == 2 and "not found" in r.output and len(r.output.strip().splitlines()) <= 2
    (tmp_path / "bad.yaml").write_text("checkpoint: x\nbatch_wait: 3\n")
    r = run(cli, ["serve", "--config", str(tmp_path / "bad.yaml")])
    assert r.exit_code == 2 and "batch_wait" in r.output
    from stealkit.models.checkpoint import save_encoder

    ckpt = save_encoder(build_encoder("cnn_tiny"), tmp_path / "victim")
    r = run(cli, ["serve", "--checkpoint", str(ckpt), "--ledger", str(tmp_path / "l.sqlite"), "--defence", "topk", "--defence-arg", "kk=3"])
    assert r.exit_code == 2 and "kk" in r.output and len(r.output.strip().splitlines()) <= 2
    r = run(cli, ["serve", "--checkpoint", str(ckpt), "--defence-arg", "k=3"])
    assert r.exit_code == 2 and "without --defence" in r.output
    r = run(cli, ["keys", "list", "--ledger", "mysql://nobody@h/db"])
    assert r.exit_code == 2 and "unsupported database URL" in r.output and len(r.output.strip().splitlines()) <= 2
    r = run(cli, ["keys", "list", "--ledger", "postgresql://nobody:pw@127.0.0.1:1/db"])
    assert r.exit_code == 2 and "cannot connect" in r.output and ":pw@" not in r.output
