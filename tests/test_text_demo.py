"""The text demo: corpus, tokenizer, training determinism, the workspace, the optional encoder."""

import re

import numpy as np
import pytest
import torch

from landscape_core import cache, text_demo, text_encoder
from landscape_core import fragility as fr
from landscape_core.workspace import Workspace


def test_corpus_has_enough_labelled_sentences_of_every_kind():
    corpus = text_demo.load_corpus()
    assert len(corpus) >= 400
    assert len(set(corpus.texts)) == len(corpus), "duplicate sentences"
    tags = {t: corpus.tags.count(t) for t in text_demo.TAGS}
    assert all(count >= 20 for count in tags.values()), tags
    assert set(corpus.labels) == {0, 1}
    assert 0.4 < np.mean(corpus.labels) < 0.6


def test_corpus_file_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("label\ttag\ttext\npositive\tplain\tfine\nhappy\tplain\toops\n")
    with pytest.raises(ValueError, match=r"bad.tsv:3"):
        text_demo.load_corpus(path)


def test_split_is_stratified_disjoint_and_deterministic():
    corpus = text_demo.load_corpus()
    train, val = text_demo.split_corpus(corpus, seed=0)
    again_train, _ = text_demo.split_corpus(corpus, seed=0)
    assert train == again_train
    assert len(train) + len(val) == len(corpus) and not set(train.texts) & set(val.texts)
    for tag in text_demo.TAGS:
        assert tag in val.tags
    with pytest.raises(ValueError, match="val_fraction"):
        text_demo.split_corpus(corpus, val_fraction=1.5)


def test_tokenizer_pads_truncates_and_counts_unknown_words():
    tok = text_demo.Tokenizer.fit(["good movie", "bad movie", "good good food"], max_length=4)
    assert tok.vocab[:2] == ["<pad>", "<unk>"] and tok.vocab[2:] == ["good", "movie", "bad", "food"]
    enc = tok.encode(["Good MOVIE!", "a great movie", "good bad good bad good food"])
    assert enc.ids.dtype == torch.long and enc.ids.shape == (3, 4)
    assert enc.ids[0].tolist() == [2, 3, 0, 0]
    assert enc.ids[1].tolist() == [1, 1, 3, 0] and enc.unknown.tolist() == [0, 2, 0]
    assert enc.truncated == (2,) and enc.lengths.tolist() == [2, 3, 4] and enc.original_lengths[2] == 6
    assert tok.decode(enc.ids[1]) == ["<unk>", "<unk>", "movie"]


def test_tokenizer_refuses_empty_text_unless_asked_to_pad():
    tok = text_demo.Tokenizer.fit(["good movie"])
    with pytest.raises(ValueError, match=r"texts\[1\] = '  !! ' has no words"):
        tok.encode(["good", "  !! "])
    enc = tok.encode(["good", ""], empty="pad")
    assert enc.empty == (1,) and enc.ids[1].abs().sum() == 0
    with pytest.raises(ValueError, match="list of strings"):
        tok.encode("good movie")
    with pytest.raises(ValueError, match="max_length"):
        text_demo.Tokenizer(["<pad>", "<unk>"], max_length=0)


def test_training_is_deterministic_for_a_seed():
    tok = text_demo.Tokenizer.fit(["good movie", "bad movie", "great food", "awful food"])
    enc = tok.encode(["good movie", "bad movie", "great food", "awful food"])
    y = torch.tensor([1, 0, 1, 0])
    settings = text_demo.TrainSettings(seed=3, dim=4, epochs=5, batch_size=2, checkpoints=5)
    state = torch.get_rng_state()
    a, snaps = text_demo.train(len(tok), enc.ids, y, settings)
    assert torch.equal(torch.get_rng_state(), state), "training must not move the global RNG"
    b, _ = text_demo.train(len(tok), enc.ids, y, settings)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert [e for e, _ in snaps] == [1, 2, 3, 4, 5]
    assert a.embedding.weight[0].abs().max() == 0  # the padding row never moves


@pytest.fixture(scope="module")
def workspace():
    return text_demo.load_workspace()


def test_workspace_trains_two_models_and_caches_their_weights(workspace):
    assert isinstance(workspace, Workspace) and workspace.name == "text-sentiment"
    a, b = workspace.problem, workspace.compare
    assert a.base["train_accuracy"] > 0.95 and b.base["train_accuracy"] > 0.95
    assert a.base["val_accuracy"] > 0.6  # a tiny corpus: plain sentences mostly right, the hard tags not
    X = a.splits["val"].X
    assert X.dtype == torch.long and (X == 0).any()
    assert len(workspace.texts["val"]) == a.splits["val"].n
    assert workspace.tokenizer.decode(X[0]) == [
        w if w in workspace.tokenizer.index else "<unk>"
        for w in text_demo.Tokenizer.tokenize(workspace.texts["val"][0])
    ]
    assert workspace.checkpoints and workspace.compare_checkpoints
    torch.testing.assert_close(workspace.checkpoints[-1].theta, a.theta0)
    # the figures quoted in the description are the workspace's own
    text = workspace.description
    assert f"{len(text_demo.load_corpus())} short" in text and f"{a.splits['val'].n} held out" in text
    assert f"{a.space.size:,} parameters" in text
    quoted = re.search(r"val (\d+)% vs (\d+)%", text)
    assert abs(int(quoted[1]) - 100 * a.base["val_accuracy"]) < 2.5  # a float rounding away on another CPU
    assert abs(int(quoted[2]) - 100 * b.base["val_accuracy"]) < 2.5
    keys = [k for k in cache.get_cache().iterkeys() if str(k).startswith("text-demo-weights:")]
    assert len(keys) >= 2


def test_demo_fragility_ranks_the_validation_sentences(workspace):
    result = fr.fragility(workspace.problem, samples=4, steps=5, max_inputs=40)
    assert result.n == 40 and sorted(result.ranking.tolist()) == list(range(40))
    assert (result.worst_loss >= result.base_loss[:, None] - 1e-12).all()
    j = int(np.flatnonzero(result.radii == 0.05)[0])
    np.testing.assert_allclose(result.score, result.worst_loss[:, j] - result.base_loss)
    cached = fr.fragility(workspace.problem, samples=4, steps=5, max_inputs=40)
    assert np.array_equal(cached.ranking, result.ranking)
    assert "text" in result.to_csv(texts=workspace.texts["val"]).splitlines()[0]


def test_demos_lists_the_text_workspace():
    demos = pytest.importorskip("landscape_core.demos")
    assert "text-sentiment" in demos.list_demos()


def test_pooled_head_perturbs_the_sentence_vector():
    """A head on fixed sentence vectors (here a seeded random encoder): T = 1, so the worst
    case in the ball ||delta|| <= eps is softplus(-y margin + eps ||w||) exactly."""
    rng = np.random.default_rng(0)
    table = {}

    def encode(texts):
        return np.stack([table.setdefault(t, rng.normal(size=6)) for t in texts])

    ws = text_encoder.pooled_head_workspace(encode, epochs=20)
    problem = ws.problem
    X, y = problem.splits["val"].X[:10], problem.splits["val"].y[:10]
    head = problem.model.head
    w = (head.weight[1] - head.weight[0]).detach().double()
    b = float((head.bias[1] - head.bias[0]).detach())
    vectors = problem.model.embedding.weight[X[:, 0]].detach().double()
    margin = (2 * y - 1).double() * (vectors @ w + b)
    from landscape_core import embeddings as emb

    worst = emb.worst_case(problem, X, y, [0.5], relative=False)[:, 0]
    np.testing.assert_allclose(worst, torch.nn.functional.softplus(-margin + 0.5 * w.norm()).numpy(), atol=1e-4)
    assert "embedding.weight" not in problem.space.names  # the table is frozen, only the head is analysed


@pytest.mark.skipif(not text_encoder.encoder_available()[0], reason=text_encoder.encoder_available()[1])
def test_optional_minilm_encoder_head():
    ws = text_encoder.encoder_workspace()
    assert ws.problem.base["val_accuracy"] > 0.7
