"""scripts/generator_eval.py's rare-condition diversity (issue 21), with a tiny stand-in for the Inception network."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import load_script
from fakes import TinyFeatures
from PIL import Image


@pytest.fixture(scope="module")
def geneval():
    return load_script("generator_eval")


def _face(path: Path, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_parse_condition_reads_open_and_closed_age_ranges(geneval):
    assert geneval.parse_condition("female Indian 70+") == (1, 3, 70, 200)
    assert geneval.parse_condition("male asian 80-89") == (0, 2, 80, 89)
    for bad in ("female Indian", "female Martian 70+", "female Indian old"):
        with pytest.raises(SystemExit, match="--rare"):
            geneval.parse_condition(bad)


def test_mean_pairwise_distance_is_the_mean_over_pairs(geneval):
    rows = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    pairs = [np.linalg.norm(a - b) for a, b in itertools.combinations(rows.astype(np.float64), 2)]
    assert geneval.mean_pairwise_distance(rows) == pytest.approx(np.mean(pairs), rel=1e-6)


def test_rare_diversity_draws_at_the_conditions_and_compares_with_every_real_face(geneval, tmp_path, monkeypatch):
    monkeypatch.setattr(geneval, "load_inception", lambda: TinyFeatures().eval())
    (tmp_path / "real").mkdir()
    rows = [  # female Indian: 3 faces of 70+ and one of 50 (outside the condition); male Asian: 2 of 80+
        (1, 3, 71, 0), (1, 3, 85, 1), (1, 3, 90, 2), (1, 3, 50, 3), (0, 2, 80, 4), (0, 2, 95, 5),
    ]  # fmt: skip
    table = pl.DataFrame(
        [
            {"gender": g, "race": r, "age": a, "file": _face(tmp_path / "real" / f"{i}.png", seed=i)}
            for g, r, a, i in rows
        ]
    )
    asked = []

    def sample(wanted: pl.DataFrame, folder: Path) -> list[str]:
        """One face for the Indian women (zero variety), a different one per sample for the Asian men."""
        asked.append(wanted)
        folder.mkdir(parents=True)
        varied = bool((wanted["race"] == 2).all())
        return [_face(folder / f"{i}.png", seed=100 + (i if varied else 0)) for i in range(wanted.height)]

    result = geneval.rare_diversity(table, sample, ["female Indian 70+", "male Asian 80+"], 6, tmp_path / "o", 0)

    assert result["condition"].to_list() == ["female Indian 70+", "male Asian 80+"]
    assert result["n_real"].to_list() == [3, 2]
    # the samples are asked for the condition, at ages taken from its own real faces
    assert [w.height for w in asked] == [6, 6]
    assert set(asked[0]["gender"]) == {1} and set(asked[0]["race"]) == {3} and set(asked[0]["age"]) <= {71, 85, 90}
    assert set(asked[1]["age"]) <= {80, 95}
    women, men = result.iter_rows(named=True)
    assert women["fake"] == pytest.approx(0, abs=1e-3) and women["real"] > 0 and women["ratio"] < 1e-3
    assert men["fake"] > 0 and men["ratio"] == pytest.approx(men["fake"] / men["real"])
    # the real side is every face of the condition: two faces give the distance between their features
    network = TinyFeatures().eval()
    two = geneval.features(table["file"].to_list()[4:], ["m"] * 2, network)["m"]
    assert men["real"] == pytest.approx(float(np.linalg.norm(two[0] - two[1])), rel=1e-5)
    # the colour columns are each side's own faces: the real side every face of the condition, in order
    men_real = geneval.central_saturation(table["file"].to_list()[4:])
    assert men["saturation_real"] == pytest.approx(float(men_real.mean()))
    assert women["grey_fake"] in (0.0, 1.0)  # one face drawn six times is grey or not, all together
    sheet = Image.open(tmp_path / "o" / "sheets" / "rare_female_Indian_70+.png")
    assert sheet.size == (16 * 64 + 32, 64)  # one row: 3 real faces left, 6 samples right


def test_rare_diversity_refuses_a_condition_with_fewer_than_two_faces(geneval, tmp_path):
    table = pl.DataFrame({"gender": [0], "race": [2], "age": [81], "file": ["x.png"]})
    with pytest.raises(SystemExit, match="1 real face"):
        geneval.rare_diversity(table, None, ["male Asian 80+"], 4, tmp_path, 0)


def _framed(path: Path, centre: tuple[int, int, int], frame=(0, 0, 255)) -> str:
    """A 128 px image: a ``centre`` colour square over its central half, a saturated ``frame`` around it."""
    pixels = np.zeros((128, 128, 3), np.uint8)
    pixels[:] = frame
    pixels[32:96, 32:96] = centre
    Image.fromarray(pixels).save(path)
    return str(path)


def test_central_saturation_reads_only_the_middle_of_the_face(geneval, tmp_path):
    grey = _framed(tmp_path / "grey.png", (120, 120, 120))
    red = _framed(tmp_path / "red.png", (200, 0, 0), frame=(128, 128, 128))
    pale = _framed(tmp_path / "pale.png", (200, 150, 150))  # HSV saturation (200 - 150) / 200 = 0.25
    saturation = geneval.central_saturation([grey, red, pale])
    assert saturation == pytest.approx([0.0, 1.0, 0.25], abs=0.01)


def test_colour_table_compares_each_conditions_sides(geneval, tmp_path):
    grey = [_framed(tmp_path / f"g{i}.png", (100 + i, 100 + i, 100 + i)) for i in range(3)]
    skin = [_framed(tmp_path / f"s{i}.png", (200, 150, 100)) for i in range(3)]  # saturation 0.5
    table = geneval.colour_table({"male Black 80+": (skin, grey[:1] + skin[:1]), "female White 3-9": (skin, skin)})
    assert table["condition"].to_list() == ["male Black 80+", "female White 3-9"]
    old, young = table.iter_rows(named=True)
    assert old["saturation_real"] == pytest.approx(0.5, abs=0.01) and old["grey_real"] == 0
    assert old["saturation_fake"] == pytest.approx(0.25, abs=0.01) and old["grey_fake"] == 0.5
    assert young["saturation_fake"] == pytest.approx(young["saturation_real"]) and young["grey_fake"] == 0
