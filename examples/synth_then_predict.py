"""The library behind the quick start: synthesize labelled faces, predict them, and compare with the labels.

    python examples/synth_then_predict.py runs/api-example [--n 500] [--race asian] [--seed 0]

``faceattr_batch.pipelines.synth.run`` writes UTKFace-named faces from the shipped generator, at 200 px like the
quick start's ``synth --resolution 200`` (no real faces, nothing downloaded); ``faceattr_batch.pipelines.predict.run``
reads the requested labels back from the names, so its metrics are the generator's attribute agreement as the
shipped attribute model sees it; the report folder holds the plots and report.html (docs/python-api.md lists the
other commands' functions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from faceattr_batch.pipelines.predict import PredictOptions
from faceattr_batch.pipelines.predict import run as predict
from faceattr_batch.pipelines.synth import SynthOptions, parse_choices
from faceattr_batch.pipelines.synth import run as synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for faces/, predictions.parquet and report/")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--race", default=None, help="fixed race(s), e.g. asian or white,black")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    faces = args.out / "faces"
    made = synth(
        SynthOptions(
            n=args.n,
            out_dir=faces,
            races=parse_choices(args.race, "race"),
            resolution=200,
            seed=args.seed,
            overwrite=True,
        )
    )
    result = predict(
        PredictOptions(inputs=(str(faces),), output=args.out / "predictions.parquet", report_dir=args.out / "report")
    )
    metrics = result.metrics or {}
    print(f"{made['images']} faces synthesized into {faces}")
    print(
        f"attribute agreement: gender {metrics['gender_accuracy']:.1%}, race {metrics['race_accuracy']:.1%}, "
        f"age MAE {metrics['age_mae']:.1f} years (requested vs predicted)"
    )
    print(f"report: {result.report}")


if __name__ == "__main__":
    main()
