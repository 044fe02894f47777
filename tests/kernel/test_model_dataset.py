"""The kernel's model dataset carries the net alone: ArcFace's class centres and the training state stay home."""

import torch

from solution.config import load_config
from solution.kernel.build import write_describe_only
from solution.model.net import build_net, load_checkpoint, save_checkpoint
from solution.train.loss import MarginClassifier


def test_the_shipped_checkpoint_has_no_class_head_and_describes_the_same(tmp_path):
    cfg = load_config("toy-tiny", ["model.pretrained=none", "model.whiten_dim=16"])
    net = build_net(cfg["model"]).eval()
    classifier = MarginClassifier(net.dim, 50, subcenters=3)
    source = save_checkpoint(tmp_path / "checkpoint.pt", net, classifier=classifier.state_dict(),
                             optimizer={"state": {}, "param_groups": []}, epoch=3)
    shipped = write_describe_only(source, tmp_path / "shipped.pt")
    payload = torch.load(shipped, weights_only=True)
    assert set(payload) == {"meta", "state_dict"}
    assert shipped.stat().st_size < source.stat().st_size
    images = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(shipped)[0].eval()(images), load_checkpoint(source)[0].eval()(images))
