"""ParamSpace: kinds, layout, flatten/unflatten, masks."""

import pytest
import torch
from torch import nn

from landscape_core import ParamKind, ParamSpace


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),  # 0
        nn.BatchNorm2d(3),  # 1
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),  # 4
        nn.LayerNorm(5),  # 5
        nn.Linear(5, 2, bias=False),  # 6
    )


def test_kinds_modules_and_layout():
    space = ParamSpace(small_net())
    kinds = {p.name: p.kind for p in space.params}
    assert kinds == {
        "0.weight": ParamKind.WEIGHT,
        "0.bias": ParamKind.BIAS,
        "1.weight": ParamKind.NORM,
        "1.bias": ParamKind.NORM,
        "4.weight": ParamKind.WEIGHT,
        "4.bias": ParamKind.BIAS,
        "5.weight": ParamKind.NORM,
        "5.bias": ParamKind.NORM,
        "6.weight": ParamKind.WEIGHT,
    }
    types = {p.name: p.module_type for p in space.params}
    assert types["0.weight"] == "Conv2d" and types["1.bias"] == "BatchNorm2d" and types["5.weight"] == "LayerNorm"
    assert space["4.weight"].shape == (5, 48) and space["4.weight"].module == "4"
    # offsets are contiguous and the total is the parameter count
    expected = 0
    for p in space.params:
        assert p.offset == expected
        expected += p.numel
    assert space.size == expected == sum(t.numel() for t in small_net().parameters())
    assert set(space.buffer_names) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}


def test_flatten_unflatten_round_trip_single_and_batched():
    model = small_net()
    space = ParamSpace(model)
    state = dict(model.named_parameters())
    theta = space.flatten(state)
    assert theta.shape == (space.size,)
    back = space.unflatten(theta)
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor.detach())
    assert torch.equal(space.flatten(back), theta)
    stack = torch.stack([theta, 2 * theta, -theta])
    batched = space.unflatten(stack)
    assert batched["0.weight"].shape == (3, 3, 1, 3, 3)
    assert torch.equal(batched["4.bias"][1], 2 * state["4.bias"].detach())


def test_frozen_parameters_are_not_in_the_space():
    model = small_net()
    model[6].weight.requires_grad_(False)
    space = ParamSpace(model)
    assert "6.weight" not in space.names and "6.weight" in space.frozen


def test_flatten_errors_name_the_parameter():
    space = ParamSpace(small_net())
    state = {k: v for k, v in small_net().named_parameters()}
    bad = dict(state, **{"6.weight": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match=r"6\.weight.*\(3, 5\).*\(2, 5\)"):
        space.flatten(bad)
    with pytest.raises(KeyError, match="0.bias"):
        space.flatten({k: v for k, v in state.items() if k != "0.bias"})


def test_check_rejects_wrong_length():
    space = ParamSpace(small_net())
    with pytest.raises(ValueError, match=rf"direction has shape \(7,\).*\({space.size},\)"):
        space.check(torch.zeros(7), "direction")
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        space.check([0.0] * space.size, "direction")


def _selected(space, mask):
    return [p.name for p in space.params if mask[p.slice].all()]


def test_masks_by_glob_regex_module_and_kind():
    space = ParamSpace(small_net())
    glob = space.mask(include="4.*")
    assert _selected(space, glob) == ["4.weight", "4.bias"]
    assert int(glob.sum()) == space["4.weight"].numel + space["4.bias"].numel
    assert glob.dtype is torch.bool and glob.shape == (space.size,)
    assert _selected(space, space.mask(include="re:^[46]\\.weight$")) == ["4.weight", "6.weight"]
    assert _selected(space, space.mask(modules="1")) == ["1.weight", "1.bias"]
    assert _selected(space, space.mask(kinds=["bias"])) == ["0.bias", "4.bias"]
    assert _selected(space, space.mask(kinds=["weight"], exclude="0.*")) == ["4.weight", "6.weight"]
    # entries outside the mask are exactly the complement
    m = space.mask(kinds=["norm"])
    assert int(m.sum()) == sum(p.numel for p in space.params if p.kind is ParamKind.NORM)


def test_nested_module_prefix():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Linear(2, 1))
    space = ParamSpace(model)
    assert _selected(space, space.mask(modules="0")) == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias"]
    assert _selected(space, space.mask(modules="0.1")) == ["0.1.weight", "0.1.bias"]


def test_empty_mask_is_an_error_that_lists_the_names():
    space = ParamSpace(small_net())
    with pytest.raises(ValueError, match=r"selects no parameters.*4\.weight"):
        space.mask(include="nothing.*")


def test_model_without_trainable_parameters_is_refused():
    model = nn.Linear(2, 1)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        ParamSpace(model)
