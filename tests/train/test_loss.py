import torch
import torch.nn.functional as F

from solution.train.loss import triplet_loss


def test_triplet_loss_hand_computed():
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0]])           # |a-p|^2 = 2
    n = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]])  # |a-n|^2 = 0 and 2
    # relu(2 - 0 + 0.1) = 2.1 ; relu(2 - 2 + 0.1) = 0.1 ; mean = 1.1
    assert torch.isclose(triplet_loss(a, p, n, 0.1), torch.tensor(1.1))


def test_triplet_loss_zero_when_margin_met_and_matches_torch():
    a, p, n = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1), torch.randn(4, 1, 8)
    n = F.normalize(n, dim=-1)
    ours = triplet_loss(a, p, n, 0.2)
    ref = torch.relu((a - p).pow(2).sum(1) - (a - n[:, 0]).pow(2).sum(1) + 0.2).mean()
    assert torch.isclose(ours, ref)
    assert triplet_loss(a, a, -a.unsqueeze(1), 0.1) == 0
