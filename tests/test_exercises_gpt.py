"""Notebooks 03 and 04: the exercise checks reject the usual mistakes (the registry tests in
test_exercises.py prove that each check fails on a stub and passes on its reference)."""

import math

import torch

from course_lib import exercises as ex
from course_lib.attention import causal_mask
from course_lib.solutions import nb03_gpt2 as s03
from course_lib.solutions import nb04_training_a_small_gpt as s04


def test_conv1d_to_linear_rejects_the_untransposed_weight(capsys):
    assert not ex.check_conv1d_to_linear(lambda w, b: (w, b))
    assert "expected (5, 3)" in capsys.readouterr().out


def test_kv_cache_bytes_needs_keys_and_values(capsys):
    assert not ex.check_kv_cache_bytes(lambda n_layers, b, p, d, nbytes: n_layers * b * p * d * nbytes)
    assert "0.5× the right size" in capsys.readouterr().out
    assert not ex.check_kv_cache_bytes(lambda *args: "many")
    assert "expected a number of bytes" in capsys.readouterr().out


def test_cached_attention_needs_the_shifted_mask(capsys):
    def no_mask(q, k, v, past_k, past_v):
        k_all, v_all = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        return (q @ k_all.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v_all, k_all, v_all

    def unshifted_mask(q, k, v, past_k, past_v):  # the mask of the new block only, aligned top-left
        k_all, v_all = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        scores = q @ k_all.transpose(-2, -1) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~causal_mask(q.shape[2], k_all.shape[2]).tril(), float("-inf"))
        return scores.softmax(-1) @ v_all, k_all, v_all

    assert not ex.check_cached_attention(no_mask)
    out = capsys.readouterr().out
    assert "0 cached + 4 new" in out and "5 cached + 1 new" not in out  # one new token needs no mask
    assert ex.check_cached_attention(s03.cached_attention)
    capsys.readouterr()
    assert not ex.check_cached_attention(lambda q, k, v, pk, pv: s03.cached_attention(q, k, v, pk, pv)[0])
    assert "returned 1 value(s), expected 3" in capsys.readouterr().out


def test_bpe_encode_order_matters(capsys):
    def reversed_order(chunk, merges):
        return s04.bpe_encode(chunk, [])  # no merges at all: the raw bytes

    assert not ex.check_bpe_encode(reversed_order)
    assert "chunk b' statement'" in capsys.readouterr().out


def test_lr_schedule_off_by_one_is_caught(capsys):
    def off_by_one(step, lr, total_steps, warmup_steps, min_lr_ratio):
        if step < warmup_steps:
            return lr * step / warmup_steps  # starts at 0 instead of lr / warmup_steps
        return s04.lr_schedule(step, lr, total_steps, warmup_steps, min_lr_ratio)

    assert not ex.check_lr_schedule(off_by_one)
    assert "step 0 of 500" in capsys.readouterr().out


def test_next_token_windows_targets_are_shifted(capsys):
    def unshifted(tokens, starts, block_size):
        x, _ = s04.next_token_windows(tokens, starts, block_size)
        return x, x

    assert not ex.check_next_token_windows(unshifted)
    assert "output 1" in capsys.readouterr().out
