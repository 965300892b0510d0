"""Checks for chapter 3, "Tokenization: from text to numbers".

Five exercises build what the chapter explained but took from ``llmbook`` or ``tiktoken``:
encoding by merge rank from a list of merges (checked against ``llmbook.bpe`` on a small
trained table and against tiktoken's GPT-2 ids on hard strings), special tokens handled
the way tiktoken does (allowed ones become their id, disallowed ones raise), decoding a
stream of token ids for display without breaking UTF-8 characters, how well a tokenizer
compresses (bytes per token over several documents), and an experiment: the number of
merges at which a BPE tokenizer first reaches a compression target on held-out text,
found by the learner's code and verified by training. Each check names the failing
input, shows what was expected and what came back, and recognises the usual mistakes by
recomputing the answer with that mistake built in.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import regex

from llmbook.bpe import BPETokenizer, merge_pair
from llmbook.exercises.compare import close, is_int, known_mistake, number, scalar, whole_number
from llmbook.exercises.core import CheckFailed, NotWritten, call, mismatch, register
from llmbook.tokenizers import ENDOFTEXT, GPT2_PATTERN

CHAPTER = "03"

Pair = tuple[int, int]


# --------------------------------------------------------------------------- shared tables


@functools.cache
def small_tokenizer() -> BPETokenizer:
    """A BPE tokenizer of 300 merges trained on the start of The Verdict (the chapter's story)."""
    from llmbook.data import load_corpus

    return BPETokenizer.train(load_corpus("verdict")[:12_000], vocab_size=256 + 300)


def _gpt2_byte_of() -> dict[str, int]:
    """GPT-2's printable stand-in character -> the byte it stands for (chapter 3)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_in = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in stand_in]
    stand_in.update({b: chr(256 + k) for k, b in enumerate(others)})
    return {c: b for b, c in stand_in.items()}


def gpt2_merges() -> tuple[list[Pair], list[int]]:
    """GPT-2's 50,000 merges as pairs of token ids, in order (merge k makes id 256 + k),
    and the id of each byte (GPT-2 numbers the printable bytes first). New lists on every
    call, so that a caller who changes them changes no one else's."""
    merges, byte_ids = _gpt2_merges()
    return list(merges), list(byte_ids)


@functools.cache
def _gpt2_merges() -> tuple[tuple[Pair, ...], tuple[int, ...]]:
    from llmbook.data import data_path
    from llmbook.tokenizers import load_bpe_ranks

    ranks = load_bpe_ranks(data_path("tokenizers/gpt2/r50k_base.tiktoken"))
    byte_of = _gpt2_byte_of()
    lines = data_path("tokenizers/gpt2/vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    merges = []
    for k, line in enumerate(line for line in lines if line):
        a, b = (bytes(byte_of[c] for c in part) for part in line.split(" "))
        if ranks[a + b] != 256 + k:
            raise RuntimeError(f"vocab.bpe's merge {k} does not make token {256 + k}")
        merges.append((ranks[a], ranks[b]))
    return tuple(merges), tuple(ranks[bytes([b])] for b in range(256))


@functools.cache
def _gpt2() -> Any:
    from llmbook.tokenizers import gpt2_tokenizer

    return gpt2_tokenizer()


HARD_STRINGS = (
    "  Whitespace   runs,\t\ttabs\n\n\nand  newlines  ",
    "digits 7 42 1234567 3.14159 1,000,000 2024-06-01",
    "contractions: I'm you're it's we'll they've she'd don't O'Brien's I'M DON'T",
    'punctuation!!! ... ?!? --- (a) [b] {c} "quoted" @#$%^&*',
    "accents: naïve café résumé Ångström straße, and e\u0301 (e + a combining accent)",
    "CJK: 日本語のテキスト, 中文, 한국어; Cyrillic Привет; Arabic مرحبا",
    "emoji: 🙂👍🏽 👩‍👩‍👧 🇫🇷 text🙂text",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa zzzzzzzz ----------------",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "    indented code:\n        return x  # comment\r\n",
    "no\u00a0break\u200bspace and <|endoftext|> as plain text",
)
"""Strings where a tokenizer's rules matter: runs of spaces, digits, contractions, accents,
CJK, emoji sequences, long repeats, long words, indentation, unusual spaces."""


# --------------------------------------------------------------------------- encode by merge rank


def reference_encode(text: str, merges: list[Pair], byte_ids: list[int]) -> list[int]:
    """Pre-tokenise, then in each piece merge the adjacent pair of lowest merge index."""
    rank = {pair: k for k, pair in enumerate(merges)}
    return [i for piece in regex.findall(GPT2_PATTERN, text) for i in _encode_piece(piece, rank, byte_ids)]


def _encode_leftmost(text: str, merges: list[Pair], byte_ids: list[int]) -> list[int]:
    """Mistake: merge the leftmost pair that has a merge, whatever its rank."""
    rank = {pair: k for k, pair in enumerate(merges)}
    out: list[int] = []
    for piece in regex.findall(GPT2_PATTERN, text):
        ids = [byte_ids[b] for b in piece.encode("utf-8")]
        while True:
            found = next((p for p in pairwise(ids) if p in rank), None)
            if found is None:
                break
            ids = merge_pair(ids, found, 256 + rank[found])
        out += ids
    return out


def _encode_frequent(text: str, merges: list[Pair], byte_ids: list[int]) -> list[int]:
    """Mistake: merge the most frequent pair of the piece (training's rule, not encoding's)."""
    rank = {pair: k for k, pair in enumerate(merges)}
    out: list[int] = []
    for piece in regex.findall(GPT2_PATTERN, text):
        ids = [byte_ids[b] for b in piece.encode("utf-8")]
        while True:
            known = [p for p in pairwise(ids) if p in rank]
            if not known:
                break
            best = max(known, key=known.count)
            ids = merge_pair(ids, best, 256 + rank[best])
        out += ids
    return out


def _encode_pieces(pieces: list[str], merges: list[Pair], byte_ids: list[int]) -> list[int]:
    rank = {pair: k for k, pair in enumerate(merges)}
    return [i for piece in pieces for i in _encode_piece(piece, rank, byte_ids)]


def reference_encode_piece(piece: str, merges: list[Pair], byte_ids: list[int]) -> list[int]:
    """One piece, with no pre-tokenisation."""
    return _encode_piece(piece, {pair: k for k, pair in enumerate(merges)}, byte_ids)


def _encode_piece(piece: str, rank: dict[Pair, int], byte_ids: list[int]) -> list[int]:
    """One piece: its bytes' ids, then the pair of lowest merge index first, until none."""
    ids = [byte_ids[b] for b in piece.encode("utf-8")]
    while len(ids) > 1:
        best = min(pairwise(ids), key=lambda p: rank.get(p, len(rank)))
        if best not in rank:
            break
        ids = merge_pair(ids, best, 256 + rank[best])
    return ids


def _encode_shifted(text: str, merges: list[Pair], byte_ids: list[int], offset: int) -> list[int]:
    """Mistake: merge k makes id 256 + k + offset."""
    return [i if i < 256 else i + offset for i in reference_encode(text, merges, byte_ids)]


def _encode_mistakes() -> list[tuple[Callable[..., Any], str]]:
    return [
        (
            _encode_leftmost,
            (
                "you merged the leftmost pair that has a merge; BPE merges the "
                "pair with the LOWEST merge index anywhere in the piece first, "
                "because that is the order training learned them in."
            ),
        ),
        (
            _encode_frequent,
            (
                "you merged the most frequent pair of the piece: that is how "
                "training chooses merges, but encoding replays the learned order: "
                "the pair with the lowest merge index first."
            ),
        ),
        (
            lambda t, m, b: list(range(256)) != b and reference_encode(t, m, list(range(256))),
            (
                "single bytes have ids of their own here: start each piece from "
                "[byte_ids[b] for b in piece.encode('utf-8')], not from the raw byte values."
            ),
        ),
        (
            reference_encode_piece,
            (
                "the whole text was encoded as one piece: pre-tokenise first, "
                "regex.findall(GPT2_PATTERN, text), and encode each piece on its own, so that no "
                "token crosses a word boundary."
            ),
        ),
        (
            lambda t, m, b: _encode_pieces(t.split(), m, b),
            (
                "you cut the text with str.split(), which throws the spaces away; GPT-2 keeps "
                "them, mostly at the start of words: use regex.findall(GPT2_PATTERN, text)."
            ),
        ),
        (lambda t, m, b: _encode_shifted(t, m, b, -1), "merge k (counting from 0) makes token 256 + k, not 255 + k."),
        (lambda t, m, b: _encode_shifted(t, m, b, 1), "merge k (counting from 0) makes token 256 + k, not 257 + k."),
        (
            lambda t, m, b: [i - 256 if i >= 256 else i for i in reference_encode(t, m, b)],
            "merge k (counting from 0) makes token 256 + k, not k: ids 0..255 are the bytes.",
        ),
    ]


def _show_tokens(ids: list[int], token_bytes: Callable[[int], bytes]) -> str:
    def one(i: int) -> str:
        try:
            return token_bytes(i).decode("utf-8", errors="replace")
        except Exception:  # an id outside the vocabulary
            return f"<{i}?>"

    return "|".join(one(i) for i in ids)


def _first_difference(expected: list[int], got: list[int]) -> int:
    return next(
        (k for k, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got))
    )


def _compare_encoding(
    label: str,
    args: tuple[str, list[Pair], list[int]],
    got: Any,
    expected: list[int],
    token_bytes: Callable[[int], bytes],
) -> None:
    if isinstance(got, tuple):
        got = list(got)
    if not (isinstance(got, list) and all(isinstance(i, int) for i in got)):
        raise mismatch(
            f"{label} should return a list of token ids (ints).",
            expected[:12],
            got,
            "collect the ids of every piece in one list and return it.",
        )
    if got == expected:
        return
    k = _first_difference(expected, got)
    hint = known_mistake(got, _encode_mistakes(), *args) or (
        "in each piece, find the adjacent pair with the lowest merge index, replace every "
        "occurrence of it by 256 + that index, and repeat until no adjacent pair has a merge."
    )
    context = _show_tokens(expected[max(k - 3, 0) : k], token_bytes)
    raise CheckFailed(
        f"{label}: the ids differ from token {k} on (of {len(expected)} expected, "
        f"{len(got)} returned), after ...{context!r}\n"
        f"  expected: {expected[k : k + 8]} = {_show_tokens(expected[k : k + 8], token_bytes)!r}\n"
        f"  got:      {got[k : k + 8]} = {_show_tokens(got[k : k + 8], token_bytes)!r}\n"
        f"Hint: {hint}"
    )


@register(
    "tokenization.encode_with_merges",
    chapter=CHAPTER,
    kind="build",
    time_limit=30,
    title="Encode by merge rank: GPT-2's ids from its merges",
)
def check_encode_with_merges(fn: Any) -> str:
    """A small table on ordinary text, then GPT-2's 50,000 merges on hard strings, whose ids
    must equal tiktoken's."""
    small = small_tokenizer()
    assert small.merges is not None
    texts = [
        "the painting",
        "She thought the painting was rather beautiful, and said nothing.",
        "Gisburn's   studio!\n\nA NEW café, 1907.",
        "",
    ]
    for text in texts:
        label = (
            f"encode_with_merges({text!r}, merges, byte_ids) with the 300 merges of a "
            f"small table and byte_ids = list(range(256))"
        )
        args = (text, list(small.merges), list(range(256)))
        got = call(fn, *args, label=label)
        _compare_encoding(label, args, got, small.encode_ordinary(text), small.token_bytes)
    gpt2, (merges, byte_ids) = _gpt2(), gpt2_merges()
    text = "\n".join(HARD_STRINGS)
    expected = gpt2.encode_ordinary(text)
    label = (
        f"encode_with_merges(text, gpt2_merges, gpt2_byte_ids) on {len(HARD_STRINGS)} "
        f"hard strings joined by newlines ({len(text)} characters)"
    )
    got = call(fn, text, merges, byte_ids, label=label)
    _compare_encoding(label, (text, merges, byte_ids), got, expected, gpt2.decode_single_token_bytes)
    return (
        f"Your encoder matches llmbook.bpe on a small table and gives tiktoken's GPT-2 ids "
        f"on all {len(expected)} tokens of {len(HARD_STRINGS)} hard strings: runs of "
        f"spaces, digits, contractions, accents, CJK, emoji sequences and long repeats."
    )


# --------------------------------------------------------------------------- special tokens

SPECIALS = {ENDOFTEXT: 556, "<|user|>": 557, "<|bot|>": 558}
"""The special tokens of the special-token exercise, with ids after the small table's."""


def _special_regex(specials: Any) -> str:
    return "(" + "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"


def reference_encode_special(
    text: str, encode_ordinary: Callable[[str], list[int]], special_ids: dict[str, int], allowed: Any
) -> list[int]:
    """tiktoken's rule: allowed specials become their id, any other special raises."""
    banned = [s for s in special_ids if s not in allowed]
    if banned and regex.search(_special_regex(banned), text):
        raise ValueError("disallowed special token")
    if not allowed:
        return encode_ordinary(text)
    ids: list[int] = []
    for k, chunk in enumerate(regex.split(_special_regex(allowed), text)):
        if k % 2:
            ids.append(special_ids[chunk])
        elif chunk:
            ids += encode_ordinary(chunk)
    return ids


def _special_mistakes(
    text: str, encode: Callable[[str], list[int]], special_ids: dict[str, int], allowed: Any
) -> list[tuple[Any, str]]:
    allowed_ones = [s for s in special_ids if s in allowed]

    def dropped() -> list[int]:
        return [
            i for i in reference_encode_special(text, encode, special_ids, allowed) if i not in special_ids.values()
        ]

    def first_only() -> list[int]:
        for k in range(len(text)):
            for s in allowed_ones:
                if text.startswith(s, k):
                    return [*encode(text[:k]), special_ids[s], *encode(text[k + len(s) :])]
        return encode(text)

    return [
        (
            lambda: encode(text),
            (
                f"the special tokens became ordinary text (the 13 characters of "
                f"{ENDOFTEXT!r} as several ordinary tokens); split the text at each allowed special "
                f"token and put its one id between the encoded chunks."
            ),
        ),
        (
            dropped,
            (
                "the special tokens went missing: when you split the text at them, put "
                "each one's id (special_ids[s]) between the encoded chunks."
            ),
        ),
        (
            first_only,
            (
                "only the first special token became its id; split at every "
                "occurrence, e.g. regex.split with the specials in a capturing group."
            ),
        ),
    ]


def _call_special(fn: Any, text: str, encode: Callable[[str], list[int]], allowed: Any, label: str) -> tuple[str, Any]:
    """('value', ids) or ('ValueError', message); other errors fail the check."""
    try:
        return "value", fn(text, encode, dict(SPECIALS), set(allowed))
    except NotImplementedError as err:
        raise NotWritten(str(err)) from None
    except ValueError as err:
        return "ValueError", str(err)
    except Exception as err:  # the learner's bug
        raise CheckFailed(f"Calling {label} raised {type(err).__name__}: {err}") from None


@register(
    "tokenization.special_tokens",
    chapter=CHAPTER,
    kind="build",
    title="Special tokens, allowed and disallowed, as tiktoken does",
)
def check_special_tokens(fn: Any) -> str:
    """Compared with llmbook.bpe's encode (tiktoken's rules) on specials at the start, end,
    side by side, around spaces, allowed and not."""
    tok = small_tokenizer()
    encode = tok.encode_ordinary
    eot, user, bot = SPECIALS
    cases = [
        ("The end.", set()),
        ("The end." + eot + "A new story", {eot}),
        (eot + eot + "twice" + eot, {eot}),
        (f"{user} Hello! {bot} Hi, how can I help?{eot}", {eot, user, bot}),
        (f" {eot} spaces around {eot} ", {eot, user, bot}),
        ("no special here, though <|endoftext is close", {eot}),
        ("The end." + eot, set()),
        (f"{user} Ignore the above. {eot}", {user}),
        (f"{user} Hi {bot}", {bot}),
    ]
    full = BPETokenizer(tok.ranks, dict(SPECIALS))
    for text, allowed in cases:
        label = f"encode_special({text!r}, encode_ordinary, special_ids, allowed={sorted(allowed)})"
        kind, got = _call_special(fn, text, encode, allowed, label)
        try:
            expected: Any = full.encode(text, allowed_special=allowed)
        except ValueError:
            expected = None
        if expected is None:
            if kind != "ValueError":
                banned = next(s for s in SPECIALS if s in text and s not in allowed)
                raise mismatch(
                    f"{label}: the text contains {banned!r}, which is not allowed, so the "
                    f"call should raise ValueError.",
                    "ValueError raised",
                    got,
                    "check the text for every special token that is not in `allowed` first, "
                    "and `raise ValueError(...)` naming it: user text must never smuggle in "
                    "a special token.",
                )
            continue
        if kind == "ValueError":
            raise CheckFailed(
                f"{label} raised ValueError({got!r}), but every special token in the text is "
                f"allowed.\n  expected: {expected}\nHint: raise only for special tokens that "
                f"are NOT in `allowed`."
            )
        if isinstance(got, tuple):
            got = list(got)
        if got != expected:
            hint = known_mistake(got, _special_mistakes(text, encode, SPECIALS, allowed)) or (
                "split the text at the allowed special tokens, encode each chunk with "
                "encode_ordinary (skip empty chunks) and put each special's id in between."
            )
            raise mismatch(f"{label} gave the wrong ids.", expected, got, hint)
    return (
        f"Correct on {len(cases)} texts: allowed specials become one id each (at the start, "
        f"the end, side by side, around spaces), and a disallowed one raises ValueError."
    )


# --------------------------------------------------------------------------- streaming decode


def reference_stream_decode(ids: list[int], token_bytes: dict[int, bytes]) -> list[str]:
    """The text that becomes complete with each token (an incremental UTF-8 decoder)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = [decoder.decode(token_bytes[i]) for i in ids]
    if out:
        out[-1] += decoder.decode(b"", final=True)
    return out


def _stream_mistakes(ids: list[int], table: dict[int, bytes]) -> list[tuple[Any, str]]:
    def whole_or_wait() -> list[str]:
        out, buffer = [], b""
        for i in ids:
            buffer += table[i]
            try:
                out.append(buffer.decode("utf-8"))
                buffer = b""
            except UnicodeDecodeError:
                out.append("")
        return out

    def running() -> list[str]:
        text = reference_stream_decode(ids, table)
        return ["".join(text[: k + 1]) for k in range(len(text))]

    return [
        (
            [table[i].decode("utf-8", errors="replace") for i in ids],
            (
                "each token was decoded on its own, so a character split across two tokens became "
                "'\\ufffd' (the replacement character). Keep the bytes of an unfinished character "
                "until the next token completes it."
            ),
        ),
        (
            [table[i].decode("utf-8", errors="ignore") for i in ids],
            (
                "each token was decoded on its own with errors='ignore', so characters split across "
                "tokens vanished. Keep their bytes until the next token completes them."
            ),
        ),
        (running(), ("each string should hold only the NEW text this token completes, not everything decoded so far.")),
        (
            whole_or_wait(),
            (
                "you waited until the whole buffer decoded; show the complete "
                "characters at once and keep back only the unfinished bytes at "
                "the end (codecs.getincrementaldecoder('utf-8') does exactly this)."
            ),
        ),
        (
            [s for s in reference_stream_decode(ids, table) if s],
            "return one string per token, '' for a token that completes no character yet.",
        ),
    ]


@register(
    "tokenization.stream_decode",
    chapter=CHAPTER,
    kind="build",
    title="Decode a stream of tokens without breaking characters",
)
def check_stream_decode(fn: Any) -> str:
    """GPT-2's tokens of emoji, CJK and accented text (tokens that end mid-character), and a
    hand-made table."""
    gpt2 = _gpt2()
    texts = [
        "Hello, world!",
        "naïve café",
        "日本語のテキスト",
        "emoji: 🙂👍🏽 👩‍👩‍👧 🇫🇷",
        "CJK: 中文, 한국어 and Ångström",
    ]
    cases = []
    for text in texts:
        ids = gpt2.encode_ordinary(text)
        cases.append((ids, {i: gpt2.decode_single_token_bytes(i) for i in ids}))
    hand = {0: b"a\xe6", 1: b"\x97", 2: b"\xa5b", 3: b"\xf0\x9f", 4: b"\x99", 5: b"\x82 ", 6: b"!"}
    cases += [([0, 1, 2, 3, 4, 5, 6], hand), ([6, 6], hand), ([], hand)]
    for ids, table in cases:
        label = (
            f"stream_decode({ids}, token_bytes) "
            f"[token_bytes: {dict(list(table.items())[:4])}{', ...' if len(table) > 4 else ''}]"
        )
        got = call(fn, list(ids), dict(table), label=label)
        expected = reference_stream_decode(ids, table)
        if isinstance(got, tuple):
            got = list(got)
        if not (isinstance(got, list) and all(isinstance(s, str) for s in got)):
            raise mismatch(
                f"{label} should return a list of strings, one per token.",
                expected,
                got,
                "append one string (maybe '') per token.",
            )
        if got != expected:
            hint = known_mistake(got, _stream_mistakes(ids, table)) or (
                "keep a bytes buffer; after each token, emit the longest prefix that is "
                "complete UTF-8 and keep the rest for the next token."
            )
            raise mismatch(f"{label} is wrong.", expected, got, hint)
    return (
        f"Correct on {len(cases)} streams: complete characters appear as soon as their "
        f"last byte arrives, split emoji and CJK characters never show as '\\ufffd', and "
        f"nothing is lost."
    )


# --------------------------------------------------------------------------- bytes per token


def _encoders() -> list[tuple[str, Callable[[str], list[int]]]]:
    return [
        ("a byte encoder, list(text.encode('utf-8'))", lambda t: list(t.encode("utf-8"))),
        ("a character encoder, [ord(c) for c in text]", lambda t: [ord(c) for c in t]),
        ("a word encoder, one id per whitespace-separated word", lambda t: [len(w) for w in t.split()]),
    ]


@register(
    "tokenization.bytes_per_token",
    chapter=CHAPTER,
    kind="formula",
    title="Bytes per token: how well a tokenizer compresses",
)
def check_bytes_per_token(fn: Any) -> str:
    """Several encoders and document sets, ASCII and not; total bytes over total tokens."""
    doc_sets = [
        ["hello world"],
        ["The cat sat on the mat.", "A much longer document than the first one, with many words."],
        ["naïve café", "日本語のテキスト", "emoji 🙂🙂"],
        ["a", "short", "document set", "with unequal lengths and a very long last one " * 5],
    ]
    for name, encode in _encoders():
        for docs in doc_sets:
            label = f"bytes_per_token({docs!r}, encode) with {name}"
            if len(label) > 200:
                label = f"bytes_per_token([{len(docs)} documents], encode) with {name}"
            n_bytes = sum(len(d.encode("utf-8")) for d in docs)
            n_tokens = sum(len(encode(d)) for d in docs)
            expected = n_bytes / n_tokens
            got = number(call(fn, list(docs), encode, label=label), label, expected)
            if close(got, expected, rel=1e-9):
                continue
            n_chars = sum(len(d) for d in docs)
            hint = "divide the total number of UTF-8 bytes by the total number of tokens."
            mean_ratio = sum(len(d.encode("utf-8")) / len(encode(d)) for d in docs) / len(docs)
            if isinstance(got, int) and got in (n_bytes // n_tokens, n_chars // n_tokens):
                hint = "use true division, /, not floor division, //."
            elif close(got, n_chars / n_tokens):
                hint = (
                    "you counted characters, not bytes: non-ASCII characters take 2 to 4 "
                    "bytes in UTF-8. Use len(text.encode('utf-8'))."
                )
            elif got and close(got, n_tokens / n_bytes):
                hint = "the ratio is upside down: bytes divided by tokens, not tokens by bytes."
            elif close(got, mean_ratio):
                hint = (
                    "you averaged each document's ratio, which gives a short document as "
                    "much weight as a long one. Add up all the bytes and all the tokens "
                    "first, then divide once."
                )
            raise mismatch(f"{label} is wrong.", round(expected, 6), got, hint)
    return (
        "Correct for byte, character and word encoders on English, accented, Japanese and "
        "emoji text, with documents of very different lengths."
    )


# --------------------------------------------------------------------------- experiment: merges

MERGES_TARGET = 2.5
"""Bytes per token that the tokenizer must reach on the held-out text."""
MERGES_UPPER = 2000
"""More merges than the target needs (about 800): the check trains once with this many."""


@functools.cache
def merge_texts() -> tuple[str, str]:
    """(training text, held-out text): 150,000 characters from the start of the books and
    50,000 from far later in them."""
    from llmbook.data import load_corpus

    books = load_corpus("gutenberg")
    return books[:150_000], books[3_000_000:3_050_000]


@functools.cache
def _trained(train_text: str) -> BPETokenizer:
    return BPETokenizer.train(train_text, vocab_size=256 + MERGES_UPPER)


def _prefix_measure(train_text: str, text: str, count: Callable[[str], int]) -> Callable[[int], float]:
    """n -> size of ``text`` (by ``count``) per token with the first n merges."""
    ranks = _trained(train_text).ranks
    size = count(text)

    @functools.cache
    def measure(n: int) -> float:
        sub = BPETokenizer({b: i for b, i in ranks.items() if i < 256 + n})
        return size / len(sub.encode_ordinary(text))

    return measure


def _smallest(measure: Callable[[int], float], target: float) -> int | None:
    lo, hi = 0, MERGES_UPPER
    if measure(hi) < target:
        return None
    while lo < hi:  # the first n that reaches the target, bytes per token rising with n
        mid = (lo + hi) // 2
        if measure(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


@register(
    "tokenization.smallest_merges",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="How many merges reach 2.5 bytes per token?",
)
def check_smallest_merges(fn: Any) -> str:
    """Run the learner's search on the check's texts, then verify its answer by training:
    n merges reach the target on the held-out text, n - 1 do not."""
    train_text, held_out = merge_texts()
    label = (
        f"smallest_merges(train_text [{len(train_text):,} characters of the books], "
        f"held_out [{len(held_out):,} other characters], target={MERGES_TARGET})"
    )
    got = call(fn, train_text, held_out, MERGES_TARGET, label=label)
    measure = _prefix_measure(train_text, held_out, _utf8)
    value = scalar(got)
    if is_int(value) or (isinstance(value, float) and value.is_integer()):
        n = int(value)
        if 1 <= n <= MERGES_UPPER and measure(n) >= MERGES_TARGET > measure(n - 1):
            return (
                f"{n} merges: {measure(n):.4f} bytes per token on the held-out text, and "
                f"{n - 1} merges give {measure(n - 1):.4f}, below {MERGES_TARGET}. "
                f"(Bytes alone give 1.0; each extra merge buys less than the one before.)"
            )
    expected = _smallest(measure, MERGES_TARGET)
    assert expected is not None
    n = whole_number(got, label, expected, floats_ok=True)
    on_train = _smallest(_prefix_measure(train_text, train_text, _utf8), MERGES_TARGET)
    by_chars = _smallest(_prefix_measure(train_text, held_out, len), MERGES_TARGET)
    hints = [
        (expected + 256, "that is the vocabulary size (256 bytes + the merges); return the number of merges."),
        (
            on_train,
            "that is where the TRAINING text reaches the target; measure on held_out, "
            "text the tokenizer has not seen, which compresses less well.",
        ),
        (by_chars, "you counted characters; bytes per token counts UTF-8 bytes, len(text.encode('utf-8'))."),
    ]
    hint = next((h for value, h in hints if value is not None and n == value), "")
    if not hint and 1 <= n <= MERGES_UPPER:
        hint = (
            f"with {n} merges the held-out text gets {measure(n):.4f} bytes per token, "
            f"with {n - 1} merges {measure(n - 1):.4f}; the answer is where it first "
            f"reaches {MERGES_TARGET}."
        )
    if not hint:
        hint = "search between 0 and 2,000 merges (the target needs fewer than 2,000)."
    raise mismatch(
        f"{label} is not the number of merges at which the held-out text first "
        f"reaches {MERGES_TARGET} bytes per token.",
        expected,
        got,
        hint,
    )
