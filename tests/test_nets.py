"""The literature's networks in ``landscape_core.nets``: shapes, parameter counts, data."""

import pytest
import torch

from landscape_core import nets


@pytest.mark.parametrize(("depth", "params"), [(20, 269_722), (56, 853_018)])
def test_resnet_parameter_counts_match_he_et_al(depth, params):
    # He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-56 0.85M (option A shortcuts add none)
    for skip in (True, False):
        model = nets.resnet_cifar(depth, skip=skip)
        assert sum(p.numel() for p in model.parameters()) == params


def test_resnet_shortcut_changes_the_function_and_is_zero_padded_identity():
    X, _ = nets.synthetic_images(4, seed=1)
    a = nets.resnet_cifar(8, skip=True, seed=3).eval()
    b = nets.resnet_cifar(8, skip=False, seed=3).eval()
    b.load_state_dict(a.state_dict())
    assert a(X).shape == (4, 10)
    assert not torch.allclose(a(X), b(X))
    block = a.layer2[0]  # 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 8, 8)
    short = block.shortcut(x)
    assert short.shape == (2, 32, 4, 4)
    assert torch.equal(short[:, 8:24], x[:, :, ::2, ::2])
    assert short[:, :8].abs().sum() == 0 and short[:, 24:].abs().sum() == 0


def test_resnet_refuses_depths_that_are_not_6n_plus_2():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        nets.resnet_cifar(21)


def test_synthetic_images_are_seeded_balanced_and_bounded():
    X, y = nets.synthetic_images(200, seed=5)
    X2, y2 = nets.synthetic_images(200, seed=5)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert X.shape == (200, 3, 32, 32) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y.bincount(), torch.full((10,), 20))
    assert float(X.abs().max()) <= 1.5
    assert not torch.equal(nets.synthetic_images(200, seed=6)[0], X)
