"""train-gen stopped by Ctrl-C or SIGTERM: the iteration in hand ends, its checkpoint is written, the process ends as
the signal asked, and ``--resume`` gives the uninterrupted run's generator (training.stop_request)."""

from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, make_faces

from faceattr_batch.models.registry import load_generator, read_generator_checkpoint
from faceattr_batch.pipelines import train_gen as train_gen_module
from faceattr_batch.pipelines.train_gen import TrainGenOptions
from faceattr_batch.pipelines.train_gen import run as train_gen
from faceattr_batch.training.stop_request import StopRequest


class Terminated(Exception):
    """What this test's own SIGTERM handler raises: the handler train-gen hands the signal back to."""


def _signal_during(monkeypatch, iteration: int, *signals: int) -> None:
    """Send ``signals`` to this process at the start of 0-based ``iteration``'s step, before its updates."""
    real_step = train_gen_module._train_step

    def step(gan, pixels, labels, weights, at, *rest):
        if at == iteration:
            for number in signals:
                signal.raise_signal(number)
        return real_step(gan, pixels, labels, weights, at, *rest)

    monkeypatch.setattr(train_gen_module, "_train_step", step)


def _same_generator(a: Path, b: Path) -> None:
    first, second = load_generator(a)[0], load_generator(b)[0]
    for (name, x), y in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


@pytest.fixture(autouse=True)
def ctrl_c_as_in_a_terminal():
    """Python's own Ctrl-C handler, as a foreground job has it: a runner started in a shell's background (nohup ...
    &) hands its tests SIGINT ignored, which StopRequest rightly leaves ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module", autouse=True)
def few_standing_batches():
    """Standing statistics over 2 batches, not 40: they were two thirds of each run's time, and are not tested here."""
    with pytest.MonkeyPatch.context() as patch:
        real = train_gen_module.with_standing_stats
        patch.setattr(train_gen_module, "with_standing_stats", functools.partial(real, batches=2))
        yield


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The faces, the options and the uninterrupted run (checkpoints at 3 and 5)."""
    root = tmp_path_factory.mktemp("stop")
    make_faces(root / "faces", 24)
    options = dict(source=root / "faces", iterations=5, **TINY_RUN)
    train_gen(TrainGenOptions(out_dir=root / "whole", **options))
    return root / "whole", options


def test_ctrl_c_finishes_the_iteration_writes_its_checkpoint_and_resume_equals_the_whole_run(
    whole, tmp_path, monkeypatch, caplog
):
    whole, options = whole
    with monkeypatch.context() as patch:
        _signal_during(patch, 3, signal.SIGINT)  # iteration 4 of 5, between the checkpoints at 3 and 5
        with pytest.raises(KeyboardInterrupt):
            train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    assert read_generator_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 4
    assert load_generator(tmp_path / "cut")[1]["iterations"] == 4
    assert "SIGINT: stopping after this iteration" in caplog.text
    assert "stopped at iteration 4, checkpoint written: --resume goes on from it" in caplog.text
    train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options), resume=True)
    _same_generator(whole, tmp_path / "cut")


def test_sigterm_is_handed_back_to_the_handler_it_replaced_after_the_checkpoint(whole, tmp_path, monkeypatch):
    whole, options = whole

    def terminated(number, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with monkeypatch.context() as patch:
            _signal_during(patch, 3, signal.SIGTERM)
            with pytest.raises(Terminated):
                train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options))
        assert signal.getsignal(signal.SIGTERM) is terminated
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert read_generator_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 4
    train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options), resume=True)
    _same_generator(whole, tmp_path / "cut")


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(whole, tmp_path, monkeypatch):
    _, options = whole
    with monkeypatch.context() as patch:
        _signal_during(patch, 3, signal.SIGINT, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options))
    assert read_generator_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 3


def test_a_stop_asked_in_the_last_iteration_ends_the_run_as_finished(whole, tmp_path, monkeypatch):
    whole, options = whole
    with monkeypatch.context() as patch:
        _signal_during(patch, 4, signal.SIGINT)
        train_gen(TrainGenOptions(out_dir=tmp_path / "cut", **options))  # no KeyboardInterrupt: nothing was left
    _same_generator(whole, tmp_path / "cut")


def test_an_ignored_signal_stays_ignored_and_other_threads_install_nothing():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert not stop.asked
    finally:
        signal.signal(signal.SIGINT, previous)

    seen = {}

    def in_a_thread():
        with StopRequest() as stop:
            seen["handler"], seen["asked"] = signal.getsignal(signal.SIGINT), stop.asked

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == {"handler": signal.default_int_handler, "asked": False}
    StopRequest().honour()  # no signal came: nothing happens
