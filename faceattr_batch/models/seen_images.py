"""Which images a model saw, and in which role: a seen-images file beside the model (``seen_images.parquet``).

A model's metrics on the images it was trained on flatter it (200 random UTKFace chips read race 93.0% and MAE 3.22
for the shipped model, against 84.7% and 4.77 on its validation faces), so the shipped models record every image
they saw, as the SHA-256 of the file's bytes (hashes only, no pixels), with its role:

- ``train``: the model learned from it;
- ``validation``: it chose the checkpoints and fitted the temperatures (so its figures on these are still a little
  optimistic, though it never learned from them).

The file: ``sha256`` (64 lowercase hex digits, as ``sha256sum`` and ``index --hash`` write them) and ``role`` (an
Enum), one row per distinct hash, sorted by hash, zstd. Hex measured smaller than 32-byte fixed-size binary for the
shipped 18,653 hashes (589 kB against 600 kB: zstd takes back the hex and the sorted prefixes; polars does not read
the byte-stream-split encoding that made binary 578 kB). The shipped file is made by ``scripts/seen_images.py``
from the index and the split. ``registry.seen_images_path`` says which file belongs to a model; predict marks each
row that matches (``in_training``, ``training_role``: ``schema.py``) and the metrics leave the train-role rows out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from faceattr_batch.errors import FaceattrError, first_line
from faceattr_batch.io.atomic import replacing
from faceattr_batch.io.digest import file_digest
from faceattr_batch.schema import TRAINING_ROLE, TRAINING_ROLES

SPLIT_ROLES = {"train": "train", "val": "validation"}  # a split.parquet's ``split`` value -> the role


def seen_images_table(sha256: pl.Series, split: pl.Series) -> pl.DataFrame:
    """One row per distinct hash (``sha256`` as 64 hex digits, ``split`` train/val as split.parquet writes it):
    ``sha256`` in lowercase, ``role``. A hash seen in both roles (a byte-identical copy on each side) counts as train:
    the model learned from those bytes. Null hashes (files that could not be read) are dropped."""
    unknown = set(split.drop_nulls().unique().to_list()) - set(SPLIT_ROLES)
    if unknown:
        raise FaceattrError(f"split values {sorted(unknown)}: expected {', '.join(SPLIT_ROLES)}")
    frame = pl.DataFrame({"hex": sha256.cast(pl.String), "split": split.cast(pl.String)}).drop_nulls()
    bad = frame.filter(~pl.col("hex").str.contains("^[0-9a-fA-F]{64}$"))
    if bad.height:
        raise FaceattrError(f"{bad.height} sha256 values are not 64 hex digits (first: {bad['hex'][0]!r})")
    role = pl.col("split").replace_strict(SPLIT_ROLES).cast(TRAINING_ROLE)
    return (
        frame.select(pl.col("hex").str.to_lowercase().alias("sha256"), role.alias("role"))
        .group_by("sha256")
        .agg(pl.col("role").min())  # Enum order: train before validation
        .sort("sha256")
    )


def write_seen_images(table: pl.DataFrame, path: Path) -> Path:
    """``table`` (``seen_images_table``) as a Parquet file, zstd at its strongest (written once, read per run)."""
    with replacing(path) as tmp:
        table.write_parquet(tmp, compression="zstd", compression_level=22)
    return Path(path)


@dataclass(frozen=True)
class SeenImages:
    """A loaded seen-images file: hash -> role, and the file's own digest (predict's resume fingerprint)."""

    path: Path
    roles: dict[str, str]  # sha256 hex -> role
    digest: str  # 12 hex digits of the file's sha256

    @classmethod
    def load(cls, path: Path) -> SeenImages:
        path = Path(path)
        try:
            frame = pl.read_parquet(path, columns=["sha256", "role"])
        except Exception as err:  # polars raises several types for a missing or foreign file
            raise FaceattrError(f"{path}: not a readable seen-images file ({first_line(err, 160)})") from None
        unknown = set(frame["role"].cast(pl.String).unique().drop_nulls().to_list()) - set(TRAINING_ROLES)
        if unknown:
            raise FaceattrError(f"{path}: roles {sorted(unknown)}: expected {', '.join(TRAINING_ROLES)}")
        roles = dict(zip(frame["sha256"].to_list(), frame["role"].cast(pl.String).to_list(), strict=True))
        return cls(path, roles, file_digest(path))

    def marks(self, digests: list[str | None]) -> dict[str, list]:
        """``in_training`` (None where the file could not be read) and ``training_role`` for each digest."""
        roles = [None if d is None else self.roles.get(d) for d in digests]
        in_training = [None if d is None else role is not None for d, role in zip(digests, roles, strict=True)]
        return {"in_training": in_training, "training_role": roles}
