"""course_lib.exercises: right answers pass, wrong answers fail with a reason, bad signatures raise."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import exercises as ex


def good_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = scores.softmax(-1)
    return w @ v, w


def test_check_attention_accepts_correct_functions(capsys):
    assert ex.check_attention(good_attention)
    assert ex.check_attention(lambda q, k, v, mask=None: good_attention(q, k, v, mask)[0])  # output only
    assert "✅ check_attention: all 5 cases match" in capsys.readouterr().out


def test_check_attention_reports_what_differs(capsys):
    def no_scale(q, k, v, mask=None):
        w = (q @ k.transpose(-2, -1)).softmax(-1)
        return w @ v

    assert not ex.check_attention(no_scale)
    out = capsys.readouterr().out
    assert "❌ check_attention" in out and "max |error|" in out and "B=1 H=1 T_q=4 T_k=4 D=8" in out

    def ignores_mask(q, k, v, mask=None):
        return good_attention(q, k, v, None)

    assert not ex.check_attention(ignores_mask)
    out = capsys.readouterr().out
    assert "causal mask" in out and "padding mask" in out and "2 case(s) differ" in out

    def wrong_shape(q, k, v, mask=None):
        return good_attention(q, k, v, mask)[0].transpose(1, 2)

    assert not ex.check_attention(wrong_shape)
    assert "shape (1, 4, 1, 8), expected (1, 1, 4, 8)" in capsys.readouterr().out


def test_learner_exceptions_are_reported_not_raised(capsys):
    def stub(q, k, v, mask=None):
        raise NotImplementedError

    assert not ex.check_attention(stub)
    assert "not yet" in capsys.readouterr().out

    def buggy(q, k, v, mask=None):
        return q @ v  # fails when T_q != T_k... or D mismatches
    assert not ex.check_attention(buggy)
    assert "raised RuntimeError" in capsys.readouterr().out


@pytest.mark.parametrize("check,bad", [
    (ex.check_attention, lambda q, k: q),
    (ex.check_attention, lambda q, k, v: q),  # no mask argument
    (ex.check_causal_mask, lambda: None),
    (ex.check_layer_norm, lambda x, w, b: x),  # no eps
    (ex.check_gelu, lambda x, y: x),
    (ex.check_gelu_tanh, lambda x, y: x),
    (ex.check_post_norm_block, lambda x: x),
    (ex.check_positional_encoding, lambda n: n),
    (ex.check_split_heads, lambda x: x),
])
def test_wrong_signature_is_a_type_error(check, bad):
    with pytest.raises(TypeError, match="cannot be called as fn"):
        check(bad)


def test_not_a_function_is_a_type_error():
    with pytest.raises(TypeError, match="expected a function"):
        ex.check_gelu(3)


def test_other_checks(capsys):
    assert ex.check_causal_mask(lambda t: torch.ones(t, t, dtype=torch.bool).tril())
    assert not ex.check_causal_mask(lambda t: torch.ones(t, t).tril())  # float, not bool
    assert "dtype torch.float32, expected torch.bool" in capsys.readouterr().out
    assert not ex.check_causal_mask(lambda t: torch.ones(t, t, dtype=torch.bool).triu())

    def layer_norm(x, w, b, eps=1e-5):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w + b

    assert ex.check_layer_norm(layer_norm)
    assert not ex.check_layer_norm(lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True))
                                   / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b)  # unbiased var

    assert ex.check_gelu(lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    capsys.readouterr()
    assert not ex.check_gelu(lambda x: F.gelu(x, approximate="tanh"))
    assert "matches approximate='tanh'; call check_gelu_tanh(fn)" in capsys.readouterr().out
    assert ex.check_gelu(lambda x: F.gelu(x, approximate="tanh"), approximate="tanh")
    assert ex.check_gelu_tanh(lambda x: F.gelu(x, approximate="tanh"))
    assert not ex.check_gelu_tanh(lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    assert "matches approximate='none'; call check_gelu(fn)" in capsys.readouterr().out
    assert not ex.check_gelu(torch.relu)

    def pe(n, d):
        pos = torch.arange(n)[:, None].float()
        i = torch.arange(0, d, 2).float()
        angle = pos / 10000 ** (i / d)
        return torch.stack([angle.sin(), angle.cos()], -1).reshape(n, d)

    assert ex.check_positional_encoding(pe)
    assert not ex.check_positional_encoding(lambda n, d: torch.cat([pe(n, d)[:, 0::2], pe(n, d)[:, 1::2]], 1))

    assert ex.check_split_heads(lambda x, h: x.view(x.shape[0], x.shape[1], h, -1).transpose(1, 2))
    assert not ex.check_split_heads(lambda x, h: x.view(x.shape[0], h, x.shape[1], -1))  # wrong split


# ------------------------------------------------------------------ every registered exercise

def _stub_like(fn):
    """What a notebook hands the learner: the same signature, a body that raises NotImplementedError."""
    def stub(*args, **kwargs):
        raise NotImplementedError

    stub.__signature__ = inspect.signature(fn)
    stub.__name__ = fn.__name__
    return stub


@pytest.mark.parametrize("name", sorted(ex.EXERCISES))
def test_each_check_says_not_yet_on_the_stub_and_passes_the_solution(name, capsys):
    exercise = ex.EXERCISES[name]
    solution = exercise.reference()
    assert exercise.run(_stub_like(solution)) is False
    out = capsys.readouterr().out
    assert "not yet" in out and "Traceback" not in out
    assert exercise.run(solution) is True
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(ex.EXERCISES))
def test_reveal_prints_the_solution_source(name, capsys):
    source = ex.reveal(name)
    assert source.startswith("def ") and source == capsys.readouterr().out.rstrip("\n") + "\n"


def test_every_notebook_from_01_has_at_least_two_checked_exercises():
    by_notebook = {}
    for e in ex.EXERCISES.values():
        by_notebook.setdefault(e.notebook, set()).add(e.name)
    missing = [f"{n:02d}" for n in range(1, 13) if len(by_notebook.get(f"{n:02d}", ())) < 2]
    assert not missing, f"notebooks with fewer than two checked exercises: {missing}"


def test_check_post_norm_block_tells_post_norm_from_pre_norm(capsys):
    def post_norm(x, block):
        x = block.ln_1(x + block.attn(x, causal=block.causal))
        return block.ln_2(x + block.mlp(x))

    assert ex.check_post_norm_block(post_norm)
    capsys.readouterr()
    assert not ex.check_post_norm_block(lambda x, block: block(x))  # the pre-norm block itself
    assert "3 case(s) differ" in capsys.readouterr().out

    def always_causal(x, block):
        x = block.ln_1(x + block.attn(x, causal=True))
        return block.ln_2(x + block.mlp(x))

    assert not ex.check_post_norm_block(always_causal)
    out = capsys.readouterr().out
    assert "1 case(s) differ" in out and "bidirectional" in out


def test_check_post_norm_block_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ex.check_post_norm_block(lambda x, block: x)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("name", sorted(ex.EXERCISES))
def test_not_yet_message_points_at_a_name_reveal_knows(name, capsys):
    exercise = ex.EXERCISES[name]
    exercise.run(_stub_like(exercise.reference()))
    out = capsys.readouterr().out
    assert f"exercises.reveal({name!r})" in out, out
