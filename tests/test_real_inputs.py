"""Real-model forms: tuple and dict inputs, ModelOutput-like outputs, masked-token losses,
Datasets and DataLoaders, data kept on the CPU or read lazily, checked against float64 loops."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from landscape_core import TokenCrossEntropy
from landscape_core.evaluate import evaluate_points
from landscape_core.hvp import LossFunction
from landscape_core.problem import Problem

VOCAB, CLASSES, T = 11, 5, 6


class TokenTagger(nn.Module):
    """``forward(input_ids, attention_mask)`` -> a dict-like output with per-token logits ``(n, T, C)``."""

    def __init__(self, output="ordered"):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, CLASSES)
        self.output = output

    def forward(self, input_ids, attention_mask):
        hidden = self.norm(self.embedding(input_ids)) * attention_mask.unsqueeze(-1)
        logits = self.head(torch.tanh(hidden))
        if self.output == "tuple":
            return logits, hidden
        return OrderedDict(hidden_states=hidden, logits=logits)


def token_data(n=23, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, T), generator=gen)
    lengths = torch.randint(1, T + 1, (n,), generator=gen)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    labels = torch.randint(0, CLASSES, (n, T), generator=gen)
    labels[mask == 0] = -100
    labels[torch.rand(n, T, generator=gen) < 0.2] = -100  # positions not predicted
    labels[0] = -100  # a sample with nothing to count
    return {"input_ids": ids * mask, "attention_mask": mask}, labels


def token_problem(batch_size=None, **kwargs):
    torch.manual_seed(0)
    X, y = token_data()
    return Problem(TokenTagger().double(), TokenCrossEntropy(), (X, y), batch_size=batch_size, **kwargs)


def exact_token_values(problem, theta):
    """float64 loop over samples: (loss over counted tokens, accuracy over counted tokens)."""
    X, y = problem.splits["train"].X, problem.splits["train"].y
    model = problem.local_model()
    state = {**problem.buffers, **problem.space.unflatten(theta.double())}
    total, correct, count = 0.0, 0, 0
    for i in range(y.shape[0]):
        out = torch.func.functional_call(model, state, (), {k: v[i : i + 1] for k, v in X.items()})
        logits = out["logits"][0].double()
        for t in range(T):
            label = int(y[i, t])
            if label == -100:
                continue
            total += float(-torch.log_softmax(logits[t], -1)[label])
            correct += int(int(logits[t].argmax()) == label)
            count += 1
    return total / count, correct / count


@pytest.mark.parametrize("batch_size", [1, 4, 7, None])
def test_masked_token_loss_and_accuracy_are_exact_over_batches(batch_size):
    problem = token_problem(batch_size)
    assert "train_accuracy" in problem.base  # automatic: (n, T, C) logits vs (n, T) integer labels
    gen = torch.Generator().manual_seed(1)
    basis = torch.randn(2, problem.space.size, generator=gen, dtype=torch.float64)
    coeffs = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.5, 0.7]], dtype=torch.float64)
    values = evaluate_points(problem, problem.theta0, basis, coeffs)
    for i, c in enumerate(coeffs):
        loss, acc = exact_token_values(problem, problem.theta0 + c @ basis)
        assert values["train_loss"][i] == pytest.approx(loss, abs=1e-12)
        assert values["train_accuracy"][i] == pytest.approx(acc, abs=1e-12)


def test_plain_cross_entropy_on_token_logits_is_refused_with_the_fix():
    X, y = token_data()
    with pytest.raises(
        ValueError, match=r"train: loss\(output, target\) failed.*use loss=landscape_core.TokenCrossEntropy"
    ):
        Problem(TokenTagger(), F.cross_entropy, (X, y))


def test_token_loss_hvp_matches_the_exact_hessian_for_dict_inputs():
    problem = token_problem(batch_size=5)
    theta = problem.theta0.clone()
    model = problem.local_model()
    X, y = problem.splits["train"].X, problem.splits["train"].y
    counted = int((y != -100).sum())

    def full(t):
        out = torch.func.functional_call(model, problem.space.unflatten(t), (), X)["logits"]
        return F.cross_entropy(out.reshape(-1, CLASSES), y.reshape(-1), reduction="sum") / counted

    v = torch.randn(problem.space.size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    exact = torch.autograd.functional.hvp(full, theta, v)[1]  # the whole split in one graph
    for method in ("double-backward", "forward"):
        got = LossFunction(problem, method=method).hvp(theta, v)
        assert torch.allclose(got, exact, atol=1e-10, rtol=1e-9), method


class Pair(nn.Module):
    """``forward(a, b)``: two positional inputs; returns a tuple whose first element is the logits."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(2, 4, bias=False)
        self.scale = nn.Parameter(torch.tensor(1.5))  # a root-level parameter

    def forward(self, a, b):
        return (self.scale * torch.tanh(self.a(a) + self.b(b)), a)


class Single(nn.Module):
    """The same function on one concatenated tensor: the reference for the tuple form."""

    def __init__(self, pair):
        super().__init__()
        self.pair = pair

    def forward(self, x):
        return self.pair(x[:, :3], x[:, 3:])[0]


class PairDataset(Dataset):
    def __init__(self, a, b, y):
        self.a, self.b, self.y = a, b, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"a": self.a[i], "b": self.b[i]}, int(self.y[i])


def pair_data(n=29):
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return a, b, torch.randint(0, 4, (n,), generator=gen)


def test_tuple_dict_dataset_and_dataloader_forms_agree_with_a_plain_tensor_model():
    a, b, y = pair_data()
    torch.manual_seed(0)
    pair = Pair().double()
    reference = Problem(Single(pair), F.cross_entropy, (torch.cat([a, b], 1), y), batch_size=6)

    def collate(items):
        return {"a": torch.stack([x["a"] for x, _ in items]), "b": torch.stack([x["b"] for x, _ in items])}, (
            torch.tensor([t for _, t in items])
        )

    forms = {
        "tuple": (a, b),
        "dict": {"a": a, "b": b},
        "numpy dict": {"a": a.numpy(), "b": b.numpy()},
    }
    problems = {name: Problem(pair, F.cross_entropy, (X, y), batch_size=6) for name, X in forms.items()}
    problems["dataset"] = Problem(pair, F.cross_entropy, PairDataset(a, b, y), batch_size=6)
    problems["loader"] = Problem(pair, F.cross_entropy, DataLoader(PairDataset(a, b, y), 5, shuffle=True), batch_size=6)
    problems["loader collate"] = Problem(
        pair, F.cross_entropy, DataLoader(PairDataset(a, b, y), 4, collate_fn=collate), batch_size=6
    )
    problems["lazy"] = Problem(pair, F.cross_entropy, PairDataset(a, b, y), batch_size=6, data_placement="lazy")
    problems["cpu"] = Problem(pair, F.cross_entropy, ({"a": a, "b": b}, y), batch_size=6, data_placement="cpu")
    thetas = reference.theta0 + 0.3 * torch.randn(4, reference.space.size, dtype=torch.float64)
    expected = reference.evaluate(thetas)
    for name, problem in problems.items():
        values = problem.evaluate(thetas)
        for q in ("train_loss", "train_accuracy"):
            np.testing.assert_allclose(values[q], expected[q], rtol=0, atol=1e-13, err_msg=f"{name} {q}")
    fingerprints = {name: p.data_fingerprint() for name, p in problems.items() if name not in ("tuple",)}
    assert len(set(fingerprints.values())) == 1, fingerprints  # same samples, same identity
    assert problems["tuple"].data_fingerprint() != problems["dict"].data_fingerprint()
    # subsets work on every form and keep the same samples
    subsets = {name: p.subset(11, seed=4) for name, p in problems.items()}
    for name, sub in subsets.items():
        assert sub.splits["train"].n == 11
        assert sub.base["train_loss"] == pytest.approx(subsets["dict"].base["train_loss"], abs=1e-13), name


def test_huggingface_model_output_is_read_as_its_logits():
    outputs = pytest.importorskip("transformers.modeling_outputs")

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, input_values):
            logits = self.linear(input_values)
            return outputs.SequenceClassifierOutput(loss=logits.sum() * 0, logits=logits)

    X, y = torch.randn(17, 4, dtype=torch.float64), torch.randint(0, 3, (17,))
    torch.manual_seed(0)
    model = Classifier().double()
    problem = Problem(model, F.cross_entropy, ({"input_values": X}, y), batch_size=5)
    thetas = problem.theta0 + 0.5 * torch.randn(3, problem.space.size, dtype=torch.float64)
    values = problem.evaluate(thetas)
    for i, theta in enumerate(thetas):
        logits = torch.func.functional_call(model.linear, {"weight": theta[:12].view(3, 4), "bias": theta[12:]}, (X,))
        assert values["train_loss"][i] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-13)
        assert values["train_accuracy"][i] == pytest.approx(float((logits.argmax(1) == y).double().mean()), abs=1e-13)


def test_output_callable_picks_the_tensor():
    X, y = token_data()
    torch.manual_seed(0)
    model = TokenTagger("tuple").double()
    picked = Problem(model, TokenCrossEntropy(), (X, y), output=lambda out: out[0])
    automatic = Problem(model, TokenCrossEntropy(), (X, y))
    assert picked.base == automatic.base
    with pytest.raises(ValueError, match=r"output must be a callable"):
        Problem(model, TokenCrossEntropy(), (X, y), output="logits")


def test_cpu_and_lazy_data_send_one_batch_at_a_time():
    a, b, y = pair_data(n=40)
    torch.manual_seed(0)
    pair = Pair().double()
    reads = []

    class Counting(PairDataset):
        def __getitem__(self, i):
            reads.append(i)
            return super().__getitem__(i)

    lazy = Problem(pair, F.cross_entropy, Counting(a, b, y), batch_size=8, data_placement="lazy")
    split = lazy.splits["train"]
    with pytest.raises(ValueError, match="read lazily from a Dataset"):
        split.X
    reads.clear()
    seen = 0
    for i, (X, yb, share) in enumerate(split.batches()):
        # batch i is being used: at most batch i + 1 has been read ahead
        assert max(reads) < min(8 * (i + 2), 40)
        assert X["a"].shape == (8, 3) and share == pytest.approx(0.2)
        seen += yb.shape[0]
    assert seen == 40 and sorted(reads) == list(range(40))
    held = Problem(pair, F.cross_entropy, ({"a": a, "b": b}, y), batch_size=8, data_placement="cpu")
    before = held.splits["train"].transfers
    held.evaluate(held.theta0 + torch.zeros(3, held.space.size, dtype=torch.float64))
    assert held.splits["train"].transfers - before == 5  # one pass of 5 batches per chunk of points
    assert held.base == lazy.base


def test_bad_forms_are_refused_with_a_sentence_naming_the_fix():
    a, b, y = pair_data()
    pair = Pair().double()
    with pytest.raises(
        ValueError, match=r"forward\(a, b\) needs 2 arguments but the inputs give 1; give them as a tuple"
    ):
        Problem(pair, F.cross_entropy, (a, y))
    with pytest.raises(ValueError, match=r"The inputs carry \['c'\], which forward\(a, b\) does not take"):
        Problem(pair, F.cross_entropy, ({"a": a, "c": b}, y))
    with pytest.raises(ValueError, match=r"forward needs \['b'\], which the inputs do not carry"):
        Problem(pair, F.cross_entropy, ({"a": a}, y))
    with pytest.raises(ValueError, match=r"train must be an \(X, y\) tuple.*got a tuple of 3 items.*\(\(a, b\), y\)"):
        Problem(pair, F.cross_entropy, (a, b, y))
    with pytest.raises(
        ValueError, match=r"train inputs: input tensors disagree on the number of samples \{.0.: 29, .1.: 5\}"
    ):
        Problem(pair, F.cross_entropy, ((a, b[:5]), y))
    with pytest.raises(ValueError, match=r"numpy array of Python objects"):
        Problem(pair, F.cross_entropy, (np.array(["x"] * 29, dtype=object), y))
    with pytest.raises(ValueError, match=r"Strings must be tokenized"):
        Problem(pair, F.cross_entropy, ({"a": ["x"] * 29}, y))
    with pytest.raises(ValueError, match=r"data_placement='lazy' reads a map-style Dataset.*Use 'cpu'"):
        Problem(pair, F.cross_entropy, ((a, b), y), data_placement="lazy")

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(ValueError, match=r"data_placement='lazy' reads a map-style Dataset"):
        Problem(pair, F.cross_entropy, Stream(), data_placement="lazy")
    with pytest.raises(ValueError, match=r"data_placement must be one of \['auto', 'device', 'cpu', 'lazy'\]"):
        Problem(pair, F.cross_entropy, ((a, b), y), data_placement="disk")
    with pytest.raises(ValueError, match=r"each sample must be an \(inputs, label\) pair"):
        Problem(nn.Linear(3, 4).double(), F.cross_entropy, TensorDataset(a))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_held_data_on_a_gpu_model_equals_data_on_the_gpu():
    a, b, y = pair_data(n=300)
    torch.manual_seed(0)
    pair = Pair().double()
    on_device = Problem(pair, F.cross_entropy, ({"a": a, "b": b}, y), batch_size=32, device="cuda")
    held = Problem(pair, F.cross_entropy, ({"a": a, "b": b}, y), batch_size=32, device="cuda", data_placement="cpu")
    lazy = Problem(pair, F.cross_entropy, PairDataset(a, b, y), batch_size=32, device="cuda", data_placement="lazy")
    assert held.splits["train"].placement.value == "cpu"
    assert held.splits["train"].X["a"].device.type == "cpu"
    thetas = on_device.theta0 + 0.2 * torch.randn(5, on_device.space.size, dtype=torch.float64, device="cuda")
    expected = on_device.evaluate(thetas)
    for problem in (held, lazy):
        values = problem.evaluate(thetas)
        for q in expected:
            np.testing.assert_allclose(values[q], expected[q], rtol=0, atol=1e-12)
