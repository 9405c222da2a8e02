"""Write a small folder of synthetic, UTKFace-named face drawings (Pillow only; no real faces, no downloads).

    python examples/make_example.py runs/example-faces [--count 24] [--seed 0]

Each image is a 200x200 cartoon face (head, hair, eyes, brows, nose, mouth) whose skin tone, hair and shape vary
with its labels, saved as JPEG under a UTKFace name made by ``labels.format_name``. Two extra files show what
``index`` reports: a byte-identical copy under other labels (a duplicate group with a label conflict under
``--hash``) and a name without a race field (rejected, never given an invented label).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from faceattr_batch.labels import RACES, format_name

SIZE = 200
SKIN = [(233, 196, 170), (120, 80, 60), (224, 188, 140), (176, 124, 92), (200, 160, 130)]  # by race code
HAIR = [(40, 30, 20), (15, 10, 10), (20, 20, 25), (30, 20, 15), (90, 60, 30)]


def draw_face(age: int, gender: int, race: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(40, 250) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    shirt = tuple(rng.randint(0, 255) for _ in range(3))
    draw.ellipse((rng.randint(-10, 30), 165, rng.randint(170, 210), 260), fill=shirt)  # shoulders
    skin = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in SKIN[race])
    hair = (200, 200, 200) if age >= 60 else HAIR[race]
    width = rng.randint(52, 62) - (6 if gender else 0)
    top, bottom = 38 + rng.randint(-4, 4), 178 + rng.randint(-4, 4)
    draw.ellipse((100 - width - 14, top - 6, 100 + width + 14, 120), fill=hair)  # hair behind the head
    if gender:  # long hair
        draw.rectangle((100 - width - 14, 80, 100 + width + 14, 190), fill=hair)
    draw.ellipse((100 - width, top, 100 + width, bottom), fill=skin)
    eye_y, eye_dx = 100 + rng.randint(-4, 4), 22 + rng.randint(-3, 3)
    for side in (-1, 1):
        x = 100 + side * eye_dx
        draw.ellipse((x - 9, eye_y - 5, x + 9, eye_y + 5), fill=(250, 250, 250))
        draw.ellipse((x - 4, eye_y - 4, x + 4, eye_y + 4), fill=(50, 35, 25))
        draw.line((x - 11, eye_y - 12, x + 11, eye_y - 13), fill=hair, width=3)
    shade = tuple(int(c * 0.8) for c in skin)
    draw.line((100, eye_y + 5, 96, eye_y + 28, 102, eye_y + 30), fill=shade, width=3)
    mouth_y = eye_y + 45
    lips = (170, 70, 80) if gender else tuple(int(c * 0.7) for c in skin)
    draw.arc((80, mouth_y - 10, 120, mouth_y + 8), 20, 160, fill=lips, width=4)
    if age >= 40:  # wrinkles
        for dy in (0, 6):
            draw.line((75, top + 28 + dy, 125, top + 28 + dy), fill=shade, width=1)
    if age < 10:  # a child's face is rounder and smaller
        image = image.resize((170, 170)).crop((-15, -25, 185, 175))
    return image.filter(ImageFilter.GaussianBlur(1.2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (created; existing example files are replaced)")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime(2017, 1, 16, 12, 0, 0)
    paths = []
    for i in range(args.count):
        age, gender, race = rng.choice([2, 8, 16, 25, 33, 47, 58, 71, 85]), i % 2, i % len(RACES)
        path = args.out / format_name(age, gender, race, stamp + dt.timedelta(seconds=97 * i))
        draw_face(age, gender, race, rng).save(path, quality=90)
        paths.append(path)
    copy = args.out / format_name(99, 0, 0, stamp - dt.timedelta(days=1))  # same picture, other labels
    shutil.copyfile(paths[0], copy)
    no_race = args.out / "39_1_20170116174525125.jpg.chip.jpg"  # a real quirk: the race field is missing
    draw_face(39, 1, 0, rng).save(no_race, quality=90)
    print(f"wrote {args.count + 2} synthetic faces to {args.out}")


if __name__ == "__main__":
    main()
