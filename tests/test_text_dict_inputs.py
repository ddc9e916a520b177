"""Embedding-space analyses on a tokenizer's dict (``model(**X)``), checked in float64.

Two models take ``{"input_ids", "attention_mask"}``:

* ``DictMeanPool``: the closed-form model of ``test_embeddings`` (mean-pooled embeddings, a
  linear head) whose padding is told by ``attention_mask`` only: the padding positions carry a
  real token id (as GPT-2 pads with its end-of-text token), so a mask taken from the ids would
  perturb them; the worst case then has the closed form of ``test_embeddings``;
* a two-layer BERT (transformers, random weights, nothing downloaded), whose reference is a
  plain float64 loop through ``inputs_embeds``: a route into the model the forward hook does not
  use.
"""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, input_hessian, token_inputs
from landscape_core import embeddings as emb
from landscape_core import fragility as fr
from landscape_core.first_screen import is_text_problem

PAD = 7  # a real vocabulary id used as padding: only attention_mask says which positions are padding


class DictMeanPool(nn.Module):
    def __init__(self, vocab=20, dim=5):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, input_ids, attention_mask):
        E = self.embedding(input_ids)
        mask = attention_mask[..., None].to(E.dtype)
        return {"logits": self.head((E * mask).sum(1) / mask.sum(1))}


def token_batch(n, T, vocab, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, T), generator=gen)
    lengths = torch.randint(1, T + 1, (n,), generator=gen)
    lengths[0], lengths[1] = T, 1
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[mask == 0] = PAD
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 2, (n,), generator=gen)


@pytest.fixture(scope="module")
def pooled():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DictMeanPool().double()
    X, y = token_batch(12, 6, 20, seed=1)
    problem = Problem(model, F.cross_entropy, (X, y), batch_size=5)
    mask = X["attention_mask"][..., None].double()
    E = model.embedding(X["input_ids"]).detach()
    real = mask.sum(1)[:, 0]
    w = (model.head.weight[1] - model.head.weight[0]).detach()
    b = (model.head.bias[1] - model.head.bias[0]).detach()
    margin = (2 * y - 1).double() * (((E * mask).sum(1) / real[:, None]) @ w + b)
    return {"problem": problem, "X": X, "y": y, "E": E, "mask": mask, "T": real, "w": w, "margin": margin}


def test_dict_inputs_count_as_text_and_padding_comes_from_the_attention_mask(pooled):
    assert is_text_problem(pooled["problem"])
    X = pooled["X"]
    real = token_inputs.real_tokens(X, pad_id=PAD)
    assert torch.equal(real[..., 0], X["attention_mask"] != 0)
    # without a mask the ids decide
    assert torch.equal(token_inputs.real_tokens(X["input_ids"], PAD)[..., 0], X["input_ids"] != PAD)
    with pytest.raises(ValueError, match="input_ids"):
        token_inputs.check({"ids": X["input_ids"]}, 0)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        token_inputs.check({"input_ids": X["input_ids"], "attention_mask": X["attention_mask"][:, :2]}, 0)
    empty = {"input_ids": X["input_ids"], "attention_mask": X["attention_mask"].clone()}
    empty["attention_mask"][3] = 0
    with pytest.raises(ValueError, match=r"inputs \[3\] contain only padding \(attention_mask all 0\)"):
        token_inputs.check(empty, 0)


@pytest.mark.parametrize("batch_size", [1, 5, 128])
def test_worst_case_on_dict_inputs_matches_closed_form_and_leaves_masked_positions(pooled, batch_size):
    eps = [0.0, 0.3, 2.0]
    worst, delta = emb.worst_case(
        pooled["problem"], pooled["X"], pooled["y"], eps, relative=False, return_delta=True, batch_size=batch_size
    )
    for j, e in enumerate(eps):
        exact = F.softplus(-pooled["margin"] + e * pooled["w"].norm() / pooled["T"].sqrt()).numpy()
        assert np.abs(worst[:, j] - exact).max() < 1e-4
    pad = (pooled["X"]["attention_mask"] == 0)[None, ..., None].expand_as(delta)
    assert pad.any() and torch.equal(delta[pad], torch.zeros_like(delta[pad]))


def test_average_case_sentence_embeddings_and_input_hessian_on_dict_inputs(pooled):
    problem, X, y, E, mask = pooled["problem"], pooled["X"], pooled["y"], pooled["E"], pooled["mask"]
    mean, stderr = emb.average_case(problem, X, y, [0.0, 0.4], samples=3, seed=5, batch_size=4)
    U = emb.token_directions(E, mask.bool(), 3, seed=5)
    losses = torch.stack(
        [
            F.cross_entropy(
                problem.model.head(((E + 0.4 * U[s]) * mask).sum(1) / pooled["T"][:, None]), y, reduction="none"
            )
            for s in range(3)
        ]
    ).detach()
    np.testing.assert_allclose(mean[:, 1], losses.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(stderr[:, 1], (losses.std(0) / 3**0.5).numpy(), rtol=1e-10)
    pooled_E = emb.sentence_embeddings(problem, X)
    np.testing.assert_allclose(pooled_E, ((E * mask).sum(1) / pooled["T"][:, None]).numpy(), rtol=1e-12)
    top, residual = input_hessian.input_hessian_top_eigenvalue(problem, X, y, iterations=10, batch_size=5)
    p = torch.sigmoid(pooled["margin"])
    np.testing.assert_allclose(top, (p * (1 - p) * pooled["w"].norm() ** 2 / pooled["T"]).numpy(), rtol=1e-8)


def test_fragility_on_dict_inputs_counts_real_tokens_from_the_mask(pooled):
    result = fr.fragility(
        pooled["problem"],
        split="train",
        radii=(0.0, 0.1),
        score_radius=0.1,
        samples=2,
        steps=3,
        use_cache=False,
        hessian=True,
    )
    assert np.array_equal(result.lengths, pooled["X"]["attention_mask"].sum(1).numpy())
    np.testing.assert_allclose(result.base_loss, F.softplus(-pooled["margin"]).numpy(), rtol=1e-12)


# -- a real transformer architecture ---------------------------------------------------------------
transformers_missing = importlib.util.find_spec("transformers") is None


class TinyBertClassifier(nn.Module):
    def __init__(self):
        from transformers import BertConfig, BertModel

        super().__init__()
        config = BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
            attn_implementation="eager",
        )
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds
        ).last_hidden_state
        return SequenceClassifierOutput(logits=self.head(hidden[:, 0]))


@pytest.mark.skipif(transformers_missing, reason="transformers is not installed (extra 'text')")
@pytest.mark.parametrize(
    "loss", [F.cross_entropy, nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64))]
)
def test_transformer_embedding_perturbation_matches_a_float64_inputs_embeds_loop(loss):
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = TinyBertClassifier().double().eval()
    X, _ = token_batch(7, 5, 50, seed=2)
    X["input_ids"][:, 0] = 1  # a [CLS]-like first token, always real
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    problem = Problem(model, loss, (X, y), batch_size=3)
    assert is_text_problem(problem)
    radii = [0.0, 0.2]
    mean, stderr = emb.average_case(problem, X, y, radii, samples=3, seed=1, batch_size=3)
    worst, delta = emb.worst_case(problem, X, y, [0.2], steps=4, return_delta=True, batch_size=4)

    table = model.encoder.embeddings.word_embeddings
    with torch.no_grad():
        E = table(X["input_ids"])
        U = emb.token_directions(E, X["attention_mask"][..., None] != 0, 3, seed=1)

        def loss_at(i, d):  # one input, embeddings E_i + d, through inputs_embeds
            out = model(inputs_embeds=(E[i] + d)[None], attention_mask=X["attention_mask"][i : i + 1]).logits
            return float(loss(out, y[i : i + 1]))

        for i in range(7):
            for j, r in enumerate(radii):
                values = np.array([loss_at(i, r * U[s, i]) for s in range(3)])
                assert mean[i, j] == pytest.approx(values.mean(), rel=1e-10, abs=1e-12)
                assert stderr[i, j] == pytest.approx(values.std(ddof=1) / 3**0.5, rel=1e-8, abs=1e-12)
            # the worst case is attained by the delta returned, inside the ball, zero at padding
            assert worst[i, 0] == pytest.approx(max(loss_at(i, delta[0, i]), loss_at(i, 0 * E[i])), rel=1e-10)
            real = X["attention_mask"][i] != 0
            assert float(delta[0, i].norm()) <= 0.2 * float(E[i][real].norm()) * (1 + 1e-12)
            assert torch.equal(delta[0, i][~real], torch.zeros_like(delta[0, i][~real]))
    assert (worst[:, 0] >= mean[:, 0] - 1e-12).all()


def test_embedding_gradient_norms_on_dict_inputs_match_the_closed_form(pooled):
    from landscape_core import gradient_norm

    problem, X, y = pooled["problem"], pooled["X"], pooled["y"]
    norms = gradient_norm.embedding_gradient_norms(problem, X, y, batch_size=5)
    # each real token's gradient is W^T (p - e_y) / T, so the Frobenius norm is ||W^T (p - e_y)|| / sqrt(T)
    with torch.no_grad():
        W = problem.model.head.weight
        pooled_E = (pooled["E"] * pooled["mask"]).sum(1) / pooled["T"][:, None]
        p = torch.softmax(problem.model.head(pooled_E), dim=1)
        g = (p - F.one_hot(y, 2).double()) @ W
    np.testing.assert_allclose(norms, (g.norm(dim=1) / pooled["T"].sqrt()).numpy(), rtol=1e-10)
