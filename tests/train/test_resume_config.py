"""A run's config.yaml keeps describing its checkpoint: a changed model, data or schedule is refused in one
line, nothing is rewritten; only train.epochs may grow (the run continues)."""

import yaml

from solution.cli import main


def test_changed_settings_are_refused_and_epochs_may_grow(tiny_root, tmp_path, capsys):
    args = ["--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path}", "run.workers=0",
            "train.epochs=1", "train.tuples_per_epoch=4", "train.tuples_per_step=2", "train.val_landmarks=0",
            "train.eval_before=false"]
    assert main(["train", *args]) == 0
    run = tmp_path / "toy-tiny"
    config_before, checkpoint_before = (run / "config.yaml").read_bytes(), (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    for change in ("model.backbone=resnet18", "train.lr=0.001", "run.seed=3", "model.whiten_dim=16"):
        assert main(["train", *args, change]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        key = change.split("=")[0]
        assert len(err) == 1 and err[0].startswith("error:") and key in err[0] and "run.name" in err[0], err
        assert (run / "config.yaml").read_bytes() == config_before
        assert (run / "checkpoint.pt").read_bytes() == checkpoint_before
    assert main(["train", *args, "infer.flip=true"]) == 0  # inference settings never describe the checkpoint
    assert "already finished" in capsys.readouterr().out
    assert main(["train", *args, "train.epochs=2"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2


def test_a_copied_best_pt_and_a_finished_run_are_not_taken_for_what_they_are_not(tiny_root, tmp_path, capsys):
    """#29: best.pt copied over checkpoint.pt resumed with any seed, lr or schedule and rewrote config.yaml; a
    finished run said it wrote a checkpoint it did not and rewrote train.json under the new command line;
    a best.pt of another head failed after an epoch had trained."""
    import shutil

    from solution.config import load_config
    from solution.model.net import build_net, save_checkpoint

    args = ["--config", "toy-tiny", f"data.root={tiny_root}", f"run.dir={tmp_path}", "run.workers=0",
            "train.epochs=1", "train.tuples_per_epoch=4", "train.tuples_per_step=2", "train.val_landmarks=0",
            "train.eval_before=false"]
    assert main(["train", *args]) == 0
    run = tmp_path / "toy-tiny"
    report = run / "train.json"
    written = report.read_bytes() if report.is_file() else None
    capsys.readouterr()
    assert main(["train", *args, "infer.flip=true"]) == 0
    out = capsys.readouterr().out
    assert "nothing written" in out and "wrote" not in out
    assert (report.read_bytes() if report.is_file() else None) == written
    # another head's best.pt beside a resumable checkpoint: refused before any epoch
    other = build_net(load_config("toy-tiny", ["model.pretrained=none", "model.backbone=resnet18"])["model"])
    save_checkpoint(run / "best.pt", other, epoch=1, score=0.1)
    assert main(["train", *args, "train.epochs=2"]) == 2
    assert "holds another network" in capsys.readouterr().err
    (run / "best.pt").unlink()
    # best.pt (weights, no training state) copied over checkpoint.pt
    save_checkpoint(run / "best.pt", other, epoch=1, score=0.1)
    shutil.copy(run / "best.pt", run / "checkpoint.pt")
    config_before = (run / "config.yaml").read_bytes()
    assert main(["train", *args, "run.seed=9"]) == 2
    assert "no training state" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == config_before
