"""course_lib.data.text: the offline corpus, its split, and random token windows."""

import pytest
import torch

from course_lib.data import load_corpus
from course_lib.data.text import TokenWindows, load_documents, split_documents


@pytest.mark.parametrize("domain", ["prose", "python"])
def test_corpus_is_offline_and_split_without_overlap(domain):
    docs = load_documents(domain)
    assert len(docs) > 20
    train, val = split_documents(docs)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(docs)
    assert load_corpus(domain, "train") == load_corpus(domain, "train")  # deterministic
    assert len(load_corpus(domain, "train")) > 5 * len(load_corpus(domain, "val")) > 0


def test_domains_differ():
    assert "assert" in load_corpus("prose", "all")
    assert "def " in load_corpus("python", "train")


def test_token_windows_shifted_targets_and_seeded():
    tokens = torch.arange(1000)
    a = TokenWindows(tokens, 16, torch.Generator().manual_seed(0))
    b = TokenWindows(tokens, 16, torch.Generator().manual_seed(0))
    x, y = a.sample(8)
    x2, y2 = b.sample(8)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(a.sample(8)[0], x)  # the generator moves on


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown text domain"):
        load_corpus("poetry")
    with pytest.raises(ValueError, match="split must be"):
        load_corpus("prose", "test")
    with pytest.raises(ValueError, match="need more than block_size"):
        TokenWindows(torch.arange(10), 10)
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(["a", "b"], 1.5)
