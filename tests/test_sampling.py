"""Samplers and logit filters: equal to transformers' warpers (ties included), stay in
their support, temperature sampling follows the softmax, bad parameters are refused."""

import pytest
import torch
from torch.testing import assert_close

from course_lib.sampling import (GreedySampler, MinPSampler, NucleusSampler, RepetitionPenaltySampler,
                                 TemperatureSampler, TopKSampler, TypicalSampler, apply_repetition_penalty,
                                 distinct_n, min_p_filter, repetition_rate, top_k_filter,
                                 top_p_filter, typical_filter)

lp = pytest.importorskip("transformers.generation.logits_process")


def tied_logits(seed=0, b=64, v=12, levels=4):
    """Logits drawn from a few values only, so almost every row has ties,
    including at the top-k boundary and across the nucleus threshold."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (b, v), generator=g).float() * 0.7


# ------------------------------------------------------------------ equal to transformers

@pytest.mark.parametrize("k", [1, 2, 3, 5, 12, 40])
@pytest.mark.parametrize("min_keep", [1, 4])
def test_top_k_equals_hf_with_ties(k, min_keep):
    logits = tied_logits(k)
    ours = top_k_filter(logits, k, min_tokens_to_keep=min_keep)
    ref = lp.TopKLogitsWarper(top_k=k, min_tokens_to_keep=min_keep)(None, logits.clone())
    assert torch.equal(ours, ref)
    if k == 2:  # the ties really are there: some rows keep more than k tokens
        assert (torch.isfinite(ours).sum(-1) > 2).any()


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.75, 0.9, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_top_p_equals_hf_with_ties(p, min_keep):
    for seed in range(3):
        logits = tied_logits(seed)
        ours = top_p_filter(logits, p, min_tokens_to_keep=min_keep)
        ref = lp.TopPLogitsWarper(top_p=p, min_tokens_to_keep=min_keep)(None, logits.clone())
        assert torch.equal(ours, ref)


def test_top_p_on_exact_boundary():
    # probabilities 0.5, 0.25, 0.125, 0.125: p = 0.75 is hit exactly by two tokens
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    for p in (0.5, 0.75, 0.875, 1.0):
        ref = lp.TopPLogitsWarper(top_p=p)(None, logits.clone())
        assert torch.equal(top_p_filter(logits, p), ref)


@pytest.mark.parametrize("p_base", [0.01, 0.2, 0.5, 1.0])
def test_min_p_equals_hf(p_base):
    logits = torch.cat([tied_logits(5), torch.randn(16, 12)])
    ref = lp.MinPLogitsWarper(min_p=p_base, min_tokens_to_keep=2)(None, logits.clone())
    assert torch.equal(min_p_filter(logits, p_base, min_tokens_to_keep=2), ref)


@pytest.mark.parametrize("mass", [0.05, 0.2, 0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("min_keep", [1, 3])
def test_typical_equals_hf(mass, min_keep):
    minus_inf = torch.randn(8, 12)
    minus_inf[:, :3] = float("-inf")  # already filtered tokens: 0 · log 0 must count as 0 in the entropy
    logits = torch.cat([tied_logits(6), torch.randn(16, 12) * 3, minus_inf])
    ref = lp.TypicalLogitsWarper(mass=mass, min_tokens_to_keep=min_keep)(None, logits.clone())
    assert torch.equal(typical_filter(logits, mass, min_tokens_to_keep=min_keep), ref)


def test_typical_can_drop_the_most_likely_token():
    # one token at 0.4, the rest (0.6) spread thin: the entropy is high, the 0.4 token is atypically likely
    probs = torch.tensor([[0.4] + [0.6 / 60] * 60])
    kept = torch.isfinite(typical_filter(probs.log(), 0.5))
    assert not kept[0, 0] and kept[0, 1:].sum() >= 30
    assert torch.isfinite(top_p_filter(probs.log(), 0.5))[0, 0]  # top-p keeps it first


@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_equals_hf(penalty):
    logits = torch.randn(3, 15)
    context = torch.randint(0, 15, (3, 7))
    ref = lp.RepetitionPenaltyLogitsProcessor(penalty=penalty)(context, logits.clone())
    assert_close(apply_repetition_penalty(logits, context, penalty), ref, atol=0, rtol=0)


# ------------------------------------------------------------------ samplers

def test_greedy_is_argmax_first_of_ties():
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, -1.0, 5.0, 0.0]])
    assert GreedySampler()(logits).tolist() == [1, 0]


def test_generator_makes_draws_reproducible():
    logits = torch.randn(8, 50)
    draw = lambda: TopKSampler(10, TemperatureSampler(1.5, generator=torch.Generator().manual_seed(3)))(logits)
    assert torch.equal(draw(), draw())
    other = TemperatureSampler(1.5, generator=torch.Generator().manual_seed(4))(logits.repeat(20, 1))
    same = TemperatureSampler(1.5, generator=torch.Generator().manual_seed(3))(logits.repeat(20, 1))
    assert not torch.equal(other, same)


@pytest.mark.parametrize("make", [
    lambda g: TopKSampler(1, TemperatureSampler(1.0, g)),
    lambda g: TopKSampler(3, TemperatureSampler(5.0, g)),
    lambda g: NucleusSampler(0.1, TemperatureSampler(1.0, g)),
    lambda g: NucleusSampler(0.6, TemperatureSampler(3.0, g)),
    lambda g: MinPSampler(0.3, TemperatureSampler(2.0, g)),
    lambda g: TypicalSampler(0.5, TemperatureSampler(2.0, g)),
    lambda g: TopKSampler(4, NucleusSampler(0.8, TemperatureSampler(10.0, g))),
])
def test_samplers_never_leave_their_support(make):
    g = torch.Generator().manual_seed(0)
    sampler = make(g)
    base = torch.cat([tied_logits(7, b=8, v=30), torch.randn(8, 30) * 3])  # [16, 30]
    logits = base.repeat(500, 1)  # 8000 draws, 500 per row
    filtered, s = logits, sampler
    while hasattr(s, "filter"):  # apply the chain of filters as the sampler does
        filtered, s = s.filter(filtered), s.sampler
    support = torch.isfinite(filtered)
    ids = sampler(logits)
    assert support.gather(-1, ids[:, None]).all()
    # and every token of a small support is reached
    if isinstance(sampler, TopKSampler) and sampler.k == 3 and isinstance(sampler.sampler, TemperatureSampler):
        for row in range(16):
            hit = set(ids[row::16].tolist())
            assert hit == set(torch.nonzero(support[row]).flatten().tolist())


def test_top_k_1_is_greedy_on_distinct_logits():
    logits = torch.randn(32, 100)
    assert torch.equal(TopKSampler(1, TemperatureSampler(2.0))(logits), GreedySampler()(logits))


@pytest.mark.parametrize("t", [0.5, 1.0, 3.0])
def test_temperature_sampling_follows_softmax(t):
    """Pearson chi-square goodness of fit on 60,000 draws with a fixed generator.

    The draws are deterministic, so the test cannot flake; the bound is the
    1e-6 upper quantile of chi2(df=5) (≈ 35.9), far above what a correct
    sampler gives, while a sampler that ignores t (or the softmax) is
    thousands of units away (checked below).
    """
    logits = torch.tensor([1.2, -0.3, 0.0, 2.0, -1.5, 0.7])
    n = 60_000
    ids = TemperatureSampler(t, generator=torch.Generator().manual_seed(1234))(logits.expand(n, -1))
    observed = torch.bincount(ids, minlength=6).double()

    def chi2(probs):
        expected = n * probs.double()
        return ((observed - expected) ** 2 / expected).sum().item()

    assert chi2(torch.softmax(logits / t, -1)) < 35.9
    wrong_t = 2 * t if t != 1.0 else 0.5
    assert chi2(torch.softmax(logits / wrong_t, -1)) > 100


def test_filtered_distribution_renormalises():
    logits = torch.randn(4, 20)
    probs = NucleusSampler(0.9, TemperatureSampler(0.7)).distribution(logits)
    assert_close(probs.sum(-1), torch.ones(4))
    kept = torch.isfinite(top_p_filter(logits, 0.9))
    assert torch.equal(probs > 0, kept)


def test_repetition_penalty_sampler_tracks_context():
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    s = RepetitionPenaltySampler(2.0, GreedySampler()).reset(torch.tensor([[2]]))
    assert s(logits).tolist() == [0]  # 2.0 -> chosen, now in context
    assert s(logits).tolist() == [1]  # 0 penalised to 1.0 < 1.9
    assert s.context.tolist() == [[2, 0, 1]]
    with pytest.raises(ValueError, match="batch size changed"):
        s(torch.randn(2, 3))


def test_distinct_n_and_repetition():
    assert distinct_n([[1, 2, 3, 4]], 2) == 1.0
    assert distinct_n([[1, 1, 1, 1, 1]], 1) == 0.2
    assert repetition_rate([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(3 / 5)
    assert repetition_rate([1, 2, 3], n=4) == 0.0


# ------------------------------------------------------------------ bad parameters

@pytest.mark.parametrize("make,err,match", [
    (lambda: TopKSampler(0), ValueError, r"k must be >= 1, got 0"),
    (lambda: TopKSampler(-3), ValueError, r"k must be >= 1"),
    (lambda: TopKSampler(2.5), TypeError, r"k must be an int"),
    (lambda: NucleusSampler(0.0), ValueError, r"p must be in \(0, 1\], got 0$"),
    (lambda: NucleusSampler(1.01), ValueError, r"p must be in \(0, 1\]"),
    (lambda: NucleusSampler(float("nan")), ValueError, r"p must be finite"),
    (lambda: TemperatureSampler(0), ValueError, r"temperature t must be > 0"),
    (lambda: TemperatureSampler(-1.0), ValueError, r"temperature t must be > 0"),
    (lambda: TemperatureSampler("hot"), TypeError, r"temperature t must be a number"),
    (lambda: TemperatureSampler(1.0, generator=0), TypeError, r"generator must be a torch.Generator"),
    (lambda: MinPSampler(0.0), ValueError, r"min_p must be in \(0, 1\]"),
    (lambda: TypicalSampler(0.0), ValueError, r"mass must be in \(0, 1\]"),
    (lambda: RepetitionPenaltySampler(0.0), ValueError, r"penalty must be > 0"),
    (lambda: TopKSampler(3, sampler="greedy"), TypeError, r"sampler must be a Sampler"),
])
def test_bad_parameters_fail_at_construction(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_bad_logits_and_filter_args():
    with pytest.raises(ValueError, match=r"logits must have shape \[batch, vocab\]"):
        GreedySampler()(torch.randn(5))
    with pytest.raises(TypeError, match="floating point"):
        top_k_filter(torch.ones(2, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        top_p_filter(torch.randn(2, 3), 1.5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_filter(torch.randn(2, 3), 0)
    with pytest.raises(ValueError, match=r"context ids must be in \[0, 3\)"):
        apply_repetition_penalty(torch.randn(1, 3), torch.tensor([[3]]), 1.2)
