import torch
import torch.nn.functional as F

from solution.train.loss import triplet_loss


def test_triplet_loss_hand_computed():
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.0, 1.0]])           # |a-p|^2 = 2
    n = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]])  # |a-n|^2 = 0 and 2
    # relu(2 - 0 + 0.1) = 2.1 ; relu(2 - 2 + 0.1) = 0.1 ; mean = 1.1
    assert torch.isclose(triplet_loss(a, p, n, 0.1), torch.tensor(1.1))


def test_triplet_loss_second_hand_case_and_zero_when_the_margin_is_met():
    # a=(1,0), p=(.6,.8): |a-p|^2 = .8; n1=(0,1): 2; n2=(.8,.6): .4
    # relu(.8 - 2 + .1) = 0; relu(.8 - .4 + .1) = .5; second tuple: a=p, n=-a: relu(0 - 4 + .1) = 0 twice
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    n = torch.tensor([[[0.0, 1.0], [0.8, 0.6]], [[0.0, -1.0], [0.0, -1.0]]])
    assert torch.isclose(triplet_loss(a, p, n, 0.1), torch.tensor(0.5 / 4))
    unit = F.normalize(torch.randn(4, 8), dim=1)
    assert triplet_loss(unit, unit, -unit.unsqueeze(1), 0.1) == 0
