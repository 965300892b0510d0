import pytest

from llmbook.tokenizers import CharTokenizer, gpt2_tokenizer


def test_gpt2_tokenizer_offline(monkeypatch):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    enc = gpt2_tokenizer()
    assert enc.encode("Hello, world") == [15496, 11, 995]
    assert enc.n_vocab == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    text = "  Whitespace   runs, digits 12345, naïve café — 日本語!\n\n"
    assert enc.decode(enc.encode(text)) == text


def test_char_tokenizer_round_trip_and_errors():
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == 8 and tok.chars == sorted(set("hello world"))
    assert tok.decode(tok.encode("low door")) == "low door"
    with pytest.raises(ValueError, match="not in this tokenizer's vocabulary"):
        tok.encode("xyz")
    assert CharTokenizer.from_dict(tok.to_dict()).encode("hello") == tok.encode("hello")
