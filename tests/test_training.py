"""The training loop: exact resume, atomic checkpoints, and no silent NaN."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch

from mofusion import checkpoint as checkpoint_module
from mofusion.checkpoint import load_checkpoint, resolve
from mofusion.config import preset_config
from mofusion.errors import MofusionError
from mofusion.training import Trainer, TrainingInterrupted


def tiny(bandai_root: Path, steps: int):  # type: ignore[no-untyped-def]
    return preset_config("tiny").updated(
        {
            "data": {"path": str(bandai_root), "subsets": ["dataset-1"]},
            "train": {"max_steps": steps, "checkpoint_every": 10},
        }
    )


def test_ten_plus_ten_resumed_steps_equal_twenty(bandai_root: Path, bandai_dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    straight = Trainer(tiny(bandai_root, 20), tmp_path / "straight", dataset=bandai_dataset, progress=False)
    straight.fit()
    first = Trainer(tiny(bandai_root, 10), tmp_path / "split", dataset=bandai_dataset, progress=False)
    first.fit()
    resumed = Trainer(
        tiny(bandai_root, 20),
        tmp_path / "split",
        dataset=bandai_dataset,
        resume=tmp_path / "split",
        progress=False,
    )
    assert resumed.step == 10
    resumed.fit()
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    for name, a in straight.ema.state_dict().items():
        assert torch.equal(a, resumed.ema.state_dict()[name]), name
    a = load_checkpoint(tmp_path / "straight")
    b = load_checkpoint(tmp_path / "split")
    assert a.step == b.step == 20
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_an_interrupted_save_keeps_the_previous_checkpoint(
    bandai_root: Path, bandai_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    trainer = Trainer(tiny(bandai_root, 20), tmp_path / "run", dataset=bandai_dataset, progress=False)
    for _ in range(10):
        trainer.train_step()
    good = trainer.save()
    for _ in range(5):
        trainer.train_step()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", broken)
    with pytest.raises(OSError):
        trainer.save()
    assert resolve(tmp_path / "run") == good
    assert load_checkpoint(tmp_path / "run").step == 10
    leftovers = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert leftovers == [good.name]


def test_a_non_finite_loss_stops_training_without_touching_the_checkpoint(
    bandai_root: Path, bandai_dataset, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny(bandai_root, 30).updated({"train": {"log_every": 5, "checkpoint_every": 5}})
    trainer = Trainer(cfg, tmp_path / "run", dataset=bandai_dataset, progress=False)
    original = trainer.model.forward

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(*args, **kwargs)
        return out * float("nan") if trainer.step >= 7 else out

    trainer.model.forward = poisoned  # type: ignore[method-assign]
    with pytest.raises(MofusionError, match="not finite"):
        trainer.fit()
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint.step == 5
    assert all(torch.isfinite(v).all() for v in checkpoint.weights.values())


def test_resuming_needs_the_same_skeleton(bandai_root: Path, bandai_dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    Trainer(tiny(bandai_root, 2), tmp_path / "run", dataset=bandai_dataset, progress=False).fit()
    from mofusion.representation import FeatureSpec

    other = FeatureSpec.from_dict({**bandai_dataset.spec.to_dict()})
    skeleton = other.skeleton
    renamed = skeleton.__class__(tuple(n + "_x" for n in skeleton.names), skeleton.parents, skeleton.offsets)
    fake = type(bandai_dataset)(
        bandai_dataset.collection, bandai_dataset.split, None, bandai_dataset.normalizer
    )
    fake.collection = type(bandai_dataset.collection)(
        FeatureSpec.from_dict({**other.to_dict(), "skeleton": renamed.to_dict(),
                               "face_joints": [n + "_x" for n in other.face_joints],
                               "left_foot": [n + "_x" for n in other.left_foot],
                               "right_foot": [n + "_x" for n in other.right_foot]}),
        bandai_dataset.collection.features, bandai_dataset.collection.offsets,
        bandai_dataset.collection.names, bandai_dataset.collection.labels,
    )  # fmt: skip
    with pytest.raises(MofusionError, match="trained on another skeleton"):
        Trainer(tiny(bandai_root, 4), tmp_path / "run", dataset=fake, resume=tmp_path / "run", progress=False)


def test_focus_timesteps_are_drawn_for_their_share_of_windows(
    bandai_root: Path, bandai_dataset, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """train.focus_share 1 draws every window's noise step from train.focus_timesteps; 0.5 about
    half of them; 0 (the default) leaves the uniform draws of a run without the option unchanged;
    validation keeps drawing uniformly (its loss compares across runs); steps outside the schedule
    are refused."""

    def drawn(name: str, train: dict) -> torch.Tensor:  # type: ignore[type-arg]
        cfg = tiny(bandai_root, 1).updated({"train": {"batch_size": 64, **train}})
        trainer = Trainer(cfg, tmp_path / name, dataset=bandai_dataset, progress=False)
        losses, seen = trainer._losses, []

        def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
            terms, t = losses(*args, **kwargs)
            seen.append(t.cpu())
            return terms, t

        trainer._losses = spy  # type: ignore[method-assign]
        trainer.train_step()
        return seen[0]

    focus = [3, 71]
    every = drawn("every", {"focus_timesteps": focus, "focus_share": 1.0})
    assert set(every.tolist()) == set(focus)
    half = drawn("half", {"focus_timesteps": focus, "focus_share": 0.5})
    assert 16 <= int(torch.isin(half, torch.tensor(focus)).sum()) <= 48
    assert torch.equal(drawn("listed", {"focus_timesteps": focus}), drawn("plain", {}))
    assert len(set(drawn("plain2", {}).tolist())) > 40
    validation = [
        Trainer(tiny(bandai_root, 1).updated({"train": train}), tmp_path / f"val{i}", dataset=bandai_dataset,
                progress=False).validate()
        for i, train in enumerate(({"focus_timesteps": focus, "focus_share": 1.0}, {}))
    ]  # fmt: skip
    assert validation[0] == validation[1]
    with pytest.raises(MofusionError, match="focus_timesteps must lie in 0..99"):
        drawn("outside", {"focus_timesteps": [100], "focus_share": 0.5})
    with pytest.raises(MofusionError, match="needs train.focus_timesteps"):
        drawn("empty", {"focus_share": 0.5})


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("tpu", "unknown device 'tpu'"),
        ("meta", "device 'meta' is not supported"),
        ("cuda:99", "cuda"),
        ("mps", "mps"),
    ],
)
def test_a_device_this_machine_lacks_is_one_clear_error(name: str, words: str) -> None:
    from mofusion.training import resolve_device

    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(MofusionError, match=re.escape(words)):
        resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_after_the_step_with_a_checkpoint_of_it(
    signum: int, bandai_root: Path, bandai_dataset, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A signal during training (here while step 4 is logged) lets that step's successor finish,
    checkpoints it and raises TrainingInterrupted, which says where to resume; a resumed run takes
    the same steps as a straight one (test above), so nothing trained is lost."""
    config = tiny(bandai_root, 1000).updated({"train": {"log_every": 2, "checkpoint_every": 1000}})
    trainer = Trainer(config, tmp_path / "run", dataset=bandai_dataset, progress=False)

    def signal_at_step_4(entry: dict) -> None:
        if entry["step"] == 4:
            os.kill(os.getpid(), signum)

    # the signal's usual handler, whatever this process inherited (a shell ignores SIGINT in a
    # background job, and training leaves an ignored signal ignored)
    usual = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    inherited = signal.signal(signum, usual)
    try:
        with pytest.raises(TrainingInterrupted, match=r"at step 5: checkpoint .*step-00000005 written"):
            trainer.fit(on_log=signal_at_step_4)
        assert signal.getsignal(signum) is usual  # the handlers are put back
    finally:
        signal.signal(signum, inherited)
    assert resolve(tmp_path / "run").name == "step-00000005"
    assert load_checkpoint(tmp_path / "run").step == 5
    resumed = Trainer(
        config, tmp_path / "run", dataset=bandai_dataset, resume=tmp_path / "run", progress=False
    )
    assert resumed.step == 5
