"""course_lib.tokenizer: byte-level BPE round trips, determinism, save/load, errors."""

import random

import pytest
import regex

from course_lib.tokenizer import GPT2_SPLIT_PATTERN, BPETokenizer, pretokenize

TEXT = ("The quick brown fox jumps over the lazy dog. The dog didn't care; it's lazy!\n"
        "Numbers like 1234 and 56 stay apart from words, don't they?   Spaces too.\n") * 30


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXT, 256 + 60)


def test_pretokenizer_splits_like_gpt2():
    assert [c.decode() for c in pretokenize("Hello world, it's 2024!  ok")] == \
        ["Hello", " world", ",", " it", "'s", " 2024", "!", " ", " ok"]
    # the same regex through the `regex` package directly
    assert regex.findall(GPT2_SPLIT_PATTERN, "don't") == ["don", "'t"]


def test_roundtrip_random_bytes(tok):
    rng = random.Random(0)
    for n in [0, 1, 2, 17, 300]:
        for _ in range(20):
            data = bytes(rng.randrange(256) for _ in range(n))  # mostly invalid UTF-8
            assert tok.decode_bytes(tok.encode(data)) == data


def test_roundtrip_unicode(tok):
    rng = random.Random(1)
    samples = ["", "héllo wörld", "日本語のテキスト", "emoji 🙂🚀 mixed", "tabs\tand\r\nnewlines\n\n",
               "<|endoftext|> is just text here", TEXT[:500]]
    # random code points outside the surrogate range
    samples += ["".join(chr(rng.choice([rng.randrange(32, 0xD800), rng.randrange(0xE000, 0x110000)]))
                        for _ in range(50)) for _ in range(20)]
    for s in samples:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert tok.decode_bytes(ids) == s.encode("utf-8")


def test_merges_compress_and_are_learned_in_order(tok):
    ids = tok.encode(TEXT)
    assert len(ids) < len(TEXT.encode()) / 2
    assert len(tok.merges) == 59 and tok.vocab_size == 256 + 60  # 59 merges + <|endoftext|>
    # the first merge is the most frequent adjacent pair of the corpus' chunks
    from collections import Counter
    counts = Counter()
    for chunk in pretokenize(TEXT):
        counts.update(zip(chunk, chunk[1:]))
    best = max(counts.values())
    assert tok.merges[0] == min(p for p, c in counts.items() if c == best)


def test_training_is_deterministic():
    a = BPETokenizer.train(TEXT, 300)
    b = BPETokenizer.train(TEXT, 300)
    assert a.merges == b.merges


def test_special_token(tok):
    ids = tok.encode("a<|endoftext|>b", allow_special=True)
    assert tok.eot_id in ids and ids.count(tok.eot_id) == 1
    assert tok.eot_id not in tok.encode("a<|endoftext|>b")
    assert tok.decode(ids) == "a<|endoftext|>b"


def test_save_load(tok, tmp_path):
    tok.save(tmp_path / "tok.json")
    back = BPETokenizer.load(tmp_path / "tok.json")
    assert back.merges == tok.merges and back.vocab_size == tok.vocab_size
    assert back.encode(TEXT[:300]) == tok.encode(TEXT[:300])


def test_bad_inputs(tok):
    with pytest.raises(ValueError, match="vocab_size must be >= 256 . 1 special tokens = 257, got 100"):
        BPETokenizer.train(TEXT, 100)
    with pytest.raises(TypeError, match="str or bytes"):
        tok.encode(123)
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="missing keys"):
        BPETokenizer.from_dict({"merges": []})
    with pytest.raises(ValueError, match="refers to an id"):
        BPETokenizer([(0, 400)])
