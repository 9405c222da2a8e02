"""scripts/generator_protocol.py's rebuilt inputs: the split joined from a seen-images table by SHA-256, and the
Inception pair judge (the default ensemble less its fast member)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import REPO, load_script

from faceattr_batch.models.attr_ensemble import AttrEnsemble
from faceattr_batch.models.attr_net import AttrNet, AttrNetConfig
from faceattr_batch.models.registry import load_attr_model, save_attr_ensemble


@pytest.fixture(scope="module")
def protocol():
    sys.path.insert(0, str(REPO / "scripts"))  # as `python scripts/generator_protocol.py` has it: its generator_eval
    try:
        yield load_script("generator_protocol")
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_the_split_is_each_files_role_by_its_hash(protocol):
    index = pl.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "sha256": ["h1", "h2", "h1", None]})
    seen = pl.DataFrame({"sha256": ["h1", "h2", "h9"], "role": ["train", "validation", "train"]}).with_columns(
        pl.col("role").cast(pl.Enum(["train", "validation"]))
    )
    assert protocol.split_from_seen(index, seen).to_list() == ["train", "val", "train", None]


def test_the_pair_judge_is_the_ensemble_without_its_fast_member(protocol, tmp_path: Path):
    torch.manual_seed(0)
    nets = [AttrNet(AttrNetConfig(input_size=size, widths=(8, 16), depths=(1, 1))).eval() for size in (40, 32, 24)]
    ensemble = AttrEnsemble(nets)
    ensemble.temperatures.copy_(torch.tensor([1.1, 0.9, 0.8]))
    names = ["attr-inc128.pt", "attr-inc96.pt", "attr-fast80.pt"]
    save_attr_ensemble(ensemble, tmp_path / "default.pt", {"name": "e", "members": json.dumps(names)})
    protocol.pair_judge(tmp_path / "default.pt", tmp_path / "pair.pt")
    pair, _ = load_attr_model(tmp_path / "pair.pt")
    assert [net.config.input_size for net in pair.members] == [40, 32]
    assert pair.temperatures.tolist() == pytest.approx([1.1, 0.9, 0.8])
    saved = torch.load(tmp_path / "pair.pt", weights_only=True)
    assert json.loads(saved["meta"]["members"]) == names[:2]
    for kept, original in zip(pair.members, nets[:2], strict=True):
        for name, value in original.state_dict().items():
            assert torch.allclose(kept.state_dict()[name].float(), value.float(), atol=1e-2), name
    with pytest.raises(SystemExit, match="expected one fast member"):
        protocol.pair_judge(tmp_path / "pair.pt", tmp_path / "again.pt")


def _figures(protocol) -> dict:
    """v2's shipped figures where it passes, gen18's lead check where they exist."""
    gaps = {"40-49": -2.8, "50-59": -1.6, "60-69": -2.9, "70-79": -2.5, "80+": -0.8}
    return {
        "fid": 29.9,
        "diversity": {"worst": 0.81},
        "age_gap_default": gaps,
        "age_gap_pair": dict(gaps),
        "agreement_default": {"gender": 1.0, "race": 0.957},
        "agreement_pair": {"gender": 0.998, "race": 0.952},
        "rare": dict.fromkeys(protocol.RARE, 0.97),
        "grey_share": dict.fromkeys(protocol.OLDEST_BLACK, 0.03),
    }


def test_the_ship_verdict_holds_each_line_of_the_rule(protocol):
    verdict = protocol.ship_verdict(_figures(protocol))
    assert all(line["pass"] for line in verdict.values())
    assert len(verdict) == 2 + 2 * (5 + 2) + 7 + 2
    assert verdict["age gap 80+ (pair)"] == {"value": -0.8, "bound": 5.0, "pass": True}


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"fid": 30.1}, "fid"),
        ({"diversity": {"worst": 0.79}}, "diversity worst cell"),
        ({"age_gap_pair": {"70-79": -8.5}}, "age gap 70-79 (pair)"),  # v2's own gap
        ({"agreement_default": {"gender": 1.0, "race": 0.89}}, "race agreement (default)"),
        ({"rare": {"female Asian 70+": 0.79}}, "rare female Asian 70+"),
        ({"grey_share": {"male Black 80+": 0.43}}, "grey share male Black 80+"),
    ],
)
def test_the_ship_verdict_names_the_line_that_fails(protocol, change, failed):
    figures = _figures(protocol)
    for key, value in change.items():
        figures[key] = figures[key] | value if isinstance(value, dict) else value
    verdict = protocol.ship_verdict(figures)
    assert [name for name, line in verdict.items() if not line["pass"]] == [failed]
