"""llmbook.bpe: training, encoding that matches tiktoken exactly, special tokens, saving."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import tiktoken

from llmbook import data
from llmbook.bpe import BPETokenizer, merge_pair, pair_counts, pretokenize, train_merges
from llmbook.tokenizers import ENDOFTEXT, GPT2_PATTERN, gpt2_tokenizer

TRICKY = [
    "",
    " ",
    "\n",
    "Hello, world",
    "   leading and trailing spaces   ",
    "tabs\tand\t\ttabs, and\n\n\nnewlines\r\n  \n",
    "spaces    before a word and      \n   after a newline",
    "digits 0 1 12 123 1234 12345 3.14159 1,000,000 2024-06-01 +44 (0)20 7946 0958",
    "punctuation!!! ... ?!? --- (a) [b] {c} <d> \"quoted\" 'single' `tick` @#$%^&*_=+|\\/~",
    "contractions: I'm you're he's we've they'll she'd don't can't won't O'Brien's",
    "UPPER-case Contractions: I'M YOU'RE HE'S WE'VE THEY'LL DON'T",
    "accents: naïve café résumé façade Ångström über straße Øre",
    "CJK: 日本語のテキスト, 中文文本, 한국어 텍스트",
    "emoji: 🙂👍🏽 👩‍👩‍👧‍👦 🇫🇷 ✨ and mixed text🙂text",
    "Greek and Cyrillic: αβγ δέλτα, Привет, мир!",
    "math and symbols: ∑ x² ≤ ∞ → ≠ ± ° € £ ¥ © ™",
    "code: def f(x):\n    return x**2  # square\n",
    "\u200b zero width \u00a0 no-break \u2028 line sep",
    "a" * 300 + " " + "ab" * 100,
]


@pytest.fixture(scope="module")
def ours() -> BPETokenizer:
    return BPETokenizer.gpt2()


@pytest.fixture(scope="module")
def theirs() -> tiktoken.Encoding:
    return gpt2_tokenizer()


@pytest.mark.parametrize("text", TRICKY)
def test_gpt2_ranks_give_tiktoken_ids_on_tricky_text(ours, theirs, text) -> None:
    ids = ours.encode_ordinary(text)
    assert ids == theirs.encode_ordinary(text)
    assert ours.decode(ids) == text
    assert ours.decode_bytes(ids) == text.encode("utf-8")


@pytest.mark.parametrize("corpus", ["shakespeare", "verdict", "gutenberg"])
def test_gpt2_ranks_give_tiktoken_ids_on_every_corpus(ours, theirs, corpus) -> None:
    text = data.load_corpus(corpus)
    rng = random.Random(3)
    # A long leading slice plus random windows from all over the corpus.
    starts = [rng.randrange(len(text)) for _ in range(100)]
    slices = [text[:300_000]] + [text[s : s + 3000] for s in starts]
    for chunk in slices:
        ids = ours.encode_ordinary(chunk)
        assert ids == theirs.encode_ordinary(chunk)
        assert ours.decode(ids) == chunk


def test_every_gutenberg_book_raw_with_bom_and_crlf(ours, theirs) -> None:
    for name in data.GUTENBERG_BOOKS:
        raw = data.data_path(f"text/gutenberg/{name}").read_bytes().decode("utf-8")[:60_000]
        assert ours.encode_ordinary(raw) == theirs.encode_ordinary(raw), name


def test_random_unicode_matches_tiktoken(ours, theirs) -> None:
    rng = random.Random(0)
    alphabet = list("aAzZ09 '\t\n.,!?-")
    alphabet += ["é", "ß", "日", "本", "🙂", "\u0301", "'s", "'ll", "  ", "\r\n"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        assert ours.encode_ordinary(text) == theirs.encode_ordinary(text), repr(text)


def test_endoftext_matches_tiktoken_in_every_mode(ours, theirs) -> None:
    text = f"The end.{ENDOFTEXT}Once upon a time<|endoftext|>"
    allowed = ours.encode(text, allowed_special={ENDOFTEXT})
    assert allowed == theirs.encode(text, allowed_special={ENDOFTEXT})
    assert allowed.count(50256) == 2
    assert ours.encode(text, allowed_special="all") == allowed
    as_text = ours.encode(text, disallowed_special=())
    assert as_text == theirs.encode(text, disallowed_special=()) and 50256 not in as_text
    assert ours.decode(allowed) == ours.decode(as_text) == text
    with pytest.raises(ValueError, match="allowed_special"):
        ours.encode(text)
    with pytest.raises(ValueError):
        theirs.encode(text)
    assert ours.encode("no specials here") == theirs.encode("no specials here")


def test_unknown_special_tokens_are_errors(ours) -> None:
    with pytest.raises(ValueError, match="unknown special token"):
        ours.encode("hi", allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError, match="unknown special token"):
        ours.encode("hi", disallowed_special={"<pad>"})


def test_gpt2_ranks_match_encoder_json_and_vocab_bpe(ours) -> None:
    """GPT-2's original files (printable stand-ins for bytes, pair merges) hold the same ranks."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    stand_in = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in stand_in]
    stand_in.update({b: chr(256 + k) for k, b in enumerate(others)})
    to_byte = {c: b for b, c in stand_in.items()}
    encoder = json.loads(data.data_path("tokenizers/gpt2/encoder.json").read_text(encoding="utf-8"))
    from_json = {bytes(to_byte[c] for c in tok): i
                 for tok, i in encoder.items() if tok != ENDOFTEXT}
    assert from_json == ours.ranks
    lines = data.data_path("tokenizers/gpt2/vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [ln.split() for ln in lines if ln]
    assert len(merges) == 50_000
    for rank, (a, b) in enumerate(merges[:2000]):
        assert from_json[bytes(to_byte[c] for c in a + b)] == 256 + rank


# ---------------------------------------------------------------------------- training


def naive_train(text: str, n_merges: int) -> list[tuple[int, int]]:
    """Recount every pair after every merge: slow, obviously right."""
    words = Counter(pretokenize(text))
    seqs = {w: list(w.encode("utf-8")) for w in words}
    merges = []
    for k in range(n_merges):
        stats: Counter = Counter()
        for w, c in words.items():
            for p, n in pair_counts(seqs[w]).items():
                stats[p] += n * c
        if not stats:
            break
        best = min(stats, key=lambda p: (-stats[p], p))
        seqs = {w: merge_pair(s, best, 256 + k) for w, s in seqs.items()}
        merges.append(best)
    return merges


def test_incremental_training_equals_naive_recounting() -> None:
    text = data.load_corpus("verdict")[:8000] + " naïve 日本語 🙂🙂 1234"
    tok = BPETokenizer.train(text, 256 + 300)
    assert tok.merges == naive_train(text, 300)


def test_trained_tokenizer_basics() -> None:
    text = data.load_corpus("shakespeare")[:200_000]
    tok = BPETokenizer.train(text, 256 + 500)
    assert len(tok.merges) == 500 and tok.n_vocab == 256 + 500 + 1
    assert tok.special_tokens == {ENDOFTEXT: 756}
    assert len({tok.token_bytes(i) for i in range(756)}) == 756  # every token is new
    first = Counter()
    for w, c in Counter(p.encode() for p in pretokenize(text)).items():
        for p, n in pair_counts(w).items():
            first[p] += n * c
    assert tok.merges[0] == max(first, key=first.get)
    for i, (a, b) in enumerate(tok.merges):
        assert a < 256 + i and b < 256 + i  # merges only use tokens that already exist
    # Encoding by rank equals tiktoken given the same ranks, and round-trips.
    enc = tiktoken.Encoding(name="t", pat_str=GPT2_PATTERN, mergeable_ranks=tok.ranks,
                            special_tokens=tok.special_tokens)
    held_out = data.load_corpus("verdict") + "".join(TRICKY)
    assert tok.encode_ordinary(held_out) == enc.encode_ordinary(held_out)
    assert tok.decode(tok.encode(held_out)) == held_out
    # Fewer tokens than bytes: the merges compress.
    assert len(tok.encode(held_out)) < 0.6 * len(held_out.encode())


def test_training_is_deterministic_and_ignores_special_tokens() -> None:
    text = ("low lower lowest " * 20 + ENDOFTEXT) * 3
    a = BPETokenizer.train(text, 270)
    b = BPETokenizer.train(text, 270)
    assert a.merges == b.merges
    assert all(b"<|" not in a.token_bytes(i) for i in range(256, 256 + len(a.merges)))
    assert a.encode(text, allowed_special="all").count(a.special_tokens[ENDOFTEXT]) == 3


def test_training_stops_when_nothing_is_left_to_merge() -> None:
    tok = BPETokenizer.train("ab ab", 256 + 100, special_tokens=())
    assert tok.n_vocab == len(tok.merges) + 256 and len(tok.merges) == 2  # "ab", " ab"
    assert tok.encode("ab ab") == [256, 257]
    assert train_merges(Counter(), 10) == ([], {i: bytes([i]) for i in range(256)})


@pytest.mark.parametrize("size", [0, 100, 255, -1, 300.0, "1000"])
def test_bad_vocab_sizes(size) -> None:
    with pytest.raises(ValueError, match="256"):
        BPETokenizer.train("some text", size)


def test_vocab_of_exactly_256_is_plain_bytes() -> None:
    tok = BPETokenizer.train("hello hello", 256, special_tokens=())
    assert tok.merges == [] and tok.encode("hé") == [104, 195, 169]


def test_bad_rank_tables_and_ids() -> None:
    with pytest.raises(ValueError, match="single bytes"):
        BPETokenizer({b"a": 0})
    ranks = {bytes([i]): i for i in range(256)}
    with pytest.raises(ValueError, match="reuses the id"):
        BPETokenizer(ranks, {ENDOFTEXT: 5})
    with pytest.raises(ValueError, match="share an id"):
        BPETokenizer({**ranks, b"ab": 3})
    tok = BPETokenizer(ranks, {ENDOFTEXT: 256})
    with pytest.raises(ValueError, match="not in this vocabulary"):
        tok.decode([999])
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # half a character: replaced, not an error
    with pytest.raises(UnicodeDecodeError):
        tok.decode([0xE2, 0x82], errors="strict")


def test_save_and_load(tmp_path) -> None:
    tok = BPETokenizer.train(data.load_corpus("verdict"), 256 + 200)
    path = tmp_path / "bpe.json"
    tok.save(path)
    back = BPETokenizer.load(path)
    text = "I had always thought Jack Gisburn rather a cheap genius<|endoftext|>naïve 🙂"
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    with pytest.raises(ValueError, match="not a saved BPETokenizer"):
        BPETokenizer.from_dict({"kind": "char"})


def test_gpt2_round_trips_through_json(ours, theirs, tmp_path) -> None:
    ours.save(tmp_path / "gpt2.json")
    back = BPETokenizer.load(tmp_path / "gpt2.json")
    assert back.merges is None and back.n_vocab == 50257
    assert back.encode("Hello, world") == theirs.encode("Hello, world") == [15496, 11, 995]


def test_helpers() -> None:
    pieces = ["Hi", " there", "!", " ", " It", "'s", " 2024", "."]
    assert pretokenize("Hi there!  It's 2024.") == pieces
    assert pair_counts([1, 2, 1, 2, 3]) == Counter({(1, 2): 2, (2, 1): 1, (2, 3): 1})
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge_pair([], (1, 1), 9) == [] and merge_pair([1], (1, 1), 9) == [1]
