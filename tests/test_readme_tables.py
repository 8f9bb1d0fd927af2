"""The README's result tables match the JSON they cite (benchmarks/readme_tables.py renders them), and the
renderer reads the numbers it should: checked against values taken from the JSON by hand here."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("readme_tables", REPO / "benchmarks" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_generated_readme_block_matches_its_json():
    mod = _module()
    text = (REPO / "README.md").read_text()
    blocks = mod.PATTERN.findall(text)
    assert {b[1] for b in blocks} >= {"table10", "table2", "defence_tradeoff", "table11", "victim_ta", "speed", "serving"}
    rendered = mod.render(text)
    if rendered != text:
        import difflib

        diff = "\n".join(list(difflib.unified_diff(text.splitlines(), rendered.splitlines(), lineterm="", n=0))[:30])
        pytest.fail("README.md's generated tables differ from their JSON; run python benchmarks/readme_tables.py\n" + diff)


def _block(text: str, name: str) -> str:
    m = re.search(rf"<!-- generated: {name} -->\n(.*?)<!-- end generated: {name} -->", text, re.S)
    assert m, name
    return m.group(1)


def test_blocks_carry_the_json_numbers_read_by_hand():
    text = (REPO / "README.md").read_text()
    res = REPO / "benchmarks" / "results"
    t10 = json.loads((res / "table10_real_cpu.json").read_text())
    first = t10["rows"][0]
    sa = 100 * first["downstream"]["gtsrb"]["SA"]
    assert f"| {first['label']} | {first['queries']:,} | {sa:.2f} (" in _block(text, "table10")
    speed = json.loads((res / "cpu_steal_speed.json").read_text())
    for h in speed["headline"]:
        assert f"{h['speedup']:.2f}×" in _block(text, "speed")
    serve = json.loads((res / "serve_batching_cpu.json").read_text())
    pct = round(100 * serve["target"]["ratio"])
    assert f"**{pct}%**" in _block(text, "serving")
    assert f"{pct}%" in (REPO / "docs" / "serving.md").read_text()  # the operator's page quotes the same figure


def test_a_stale_block_is_caught(tmp_path):
    mod = _module()
    text = (REPO / "README.md").read_text()
    body = _block(text, "table2")
    stale = text.replace(body, body.replace("|", "| 0", 1), 1)
    assert mod.render(stale) != stale and mod.render(stale) == text
