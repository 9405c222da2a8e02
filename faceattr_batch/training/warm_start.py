"""Where a training's weights start: the ImageNet Inception-v3's (the ones `fid` uses) or another attribute
model's."""

from __future__ import annotations


def initialise_from_inception(model) -> None:
    """Copy the ImageNet Inception-v3 weights (the ones `fid` uses) into the model's Inception trunk."""
    from faceattr_batch.models.inception import load_inception  # torch-backed

    full = load_inception().state_dict()
    model.trunk.load_state_dict({name: full[name] for name in model.trunk.state_dict()})


def initialise_from_model(model, source) -> None:
    """Copy another attribute model's trunk and head (same architecture; the input size may differ). Its
    calibration is not carried over: this run refits the temperatures and race bias on its own validation."""
    state = source.state_dict()
    state["temperatures"] = state["temperatures"].new_ones(state["temperatures"].shape)
    state["race_bias"] = state["race_bias"].new_zeros(state["race_bias"].shape)
    model.load_state_dict(state)
