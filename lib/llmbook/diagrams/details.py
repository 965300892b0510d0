"""Second pictures for chapters that have one idea more: masks, targets, caches."""

from __future__ import annotations

from llmbook.diagrams.canvas import LINE, MUTED, PALETTE, Canvas, Diagram

GREEN, GREY, RED = "#b9e0c5", PALETTE["frozen"][0], PALETTE["stream"][1]
STREAM_RED = RED


def _attention_panel(c: Canvas, x0: float, title: str, tokens: list[str], targets: list[str], causal: bool) -> None:
    """One grid of who-sees-whom (rows: queries, columns: keys), with each row's target."""
    cell, n = 30, len(tokens)
    gx, gy = x0 + 70, 76
    c.text(x0 + 150, 30, title, size=13, bold=True, max_width=300)
    cells = [[(GREEN if (j <= i or not causal) else GREY, "") for j in range(n)] for i in range(n)]
    c.grid(gx, gy, cells, cell=cell)
    for i, tok in enumerate(tokens):
        c.text(gx + i * cell + cell / 2, gy - 14, tok, size=12, mono=True, max_width=cell)
        c.text(gx - 10, gy + i * cell + cell / 2, tok, size=12, mono=True, anchor="end", max_width=56)
        hit = targets[i] != "—"
        c.text(
            gx + n * cell + 30,
            gy + i * cell + cell / 2,
            targets[i],
            size=12,
            mono=hit,
            colour=RED if hit else MUTED,
            max_width=50,
        )
    c.text(gx + n * cell + 30, gy - 14, "target", size=11, colour=MUTED)
    c.text(gx - 10, gy - 14, "input", size=11, colour=MUTED, anchor="end")


def masked_vs_causal(text: str = "to be") -> Diagram:
    """Chapter 6: BERT-style (no mask, predict the hidden characters) against GPT-style (causal)."""
    chars = [ch if ch != " " else "␣" for ch in text]
    if not 3 <= len(chars) <= 6:
        raise ValueError(f"give 3 to 6 characters, got {len(chars)}")
    c = Canvas("masked_vs_causal", 760, 300)
    hidden = 1  # the position whose character is replaced by [MASK]
    bert_in = [("[M]" if i == hidden else ch) for i, ch in enumerate(chars)]
    bert_y = [(chars[i] if i == hidden else "—") for i in range(len(chars))]
    gpt_y = [*chars[1:], "…"]
    _attention_panel(c, 20, "masked (BERT-style): no mask", bert_in, bert_y, causal=False)
    _attention_panel(c, 400, "causal (GPT-style): the past only", chars, gpt_y, causal=True)
    c.text(
        380, 256, "green: may attend (row = query, column = key); red: a target the loss counts", size=12, colour=LINE
    )
    c.text(380, 280, "[M]: a character replaced by the [MASK] token; —: no loss at this position", size=12, colour=LINE)
    return c.finish(
        alt=(
            f"Two ways to train on the characters {text!r}. Masked, BERT-style: every position "
            "attends to every other, some inputs are replaced by a [MASK] token and the loss is "
            "only on the hidden characters. Causal, GPT-style: each position attends only to itself "
            "and earlier positions, and every position's target is the next character."
        ),
        caption=(
            "The same model, two objectives: BERT reads both ways and fills in hidden tokens; "
            "GPT reads left to right and predicts every next token."
        ),
    )


def kv_cache(tokens: tuple[str, ...] = ("The", "␣cat", "␣sat", "␣on", "␣the")) -> Diagram:
    """Chapter 7: one generation step without a cache (recompute all) and with one (one new token)."""
    if not 3 <= len(tokens) <= 6:
        raise ValueError(f"give 3 to 6 tokens, got {len(tokens)}")
    c = Canvas("kv_cache", 760, 420)
    n, cw, x0 = len(tokens), 78, 150
    new = n - 1
    for i, tok in enumerate(tokens):
        c.text(x0 + i * cw + cw / 2, 20, tok, size=13, mono=True, max_width=cw - 4)
    c.text(x0 + new * cw + cw / 2, 38, "new", size=11, colour=RED)
    blue, green = "#9fbbe3", GREEN
    panels: list[tuple[str, int, list[list[str | None]], str]] = [
        (
            "without a cache",
            60,
            [[blue] * n, [blue] * n, [blue] * n],
            f"step {n}: all {n} tokens through every block again",
        ),
        (
            "with a KV cache",
            230,
            [[None] * new + [green], [*[GREY] * new, green], [*[GREY] * new, green]],
            f"step {n}: only the new token; earlier keys and values are read from the cache",
        ),
    ]
    for title, y, rows, note in panels:
        c.text(20, y + 12, title, size=13, anchor="start", bold=True)
        for r, (name, fills) in enumerate(zip(("query", "key", "value"), rows, strict=True)):
            ry = y + 30 + r * 34
            c.text(x0 - 12, ry + 14, name, size=12, anchor="end", colour=LINE)
            for i, fill in enumerate(fills):
                if fill is None:
                    continue
                label = "cached" if fill == GREY else ""
                c.rect(x0 + i * cw + 4, ry, cw - 8, 28, fill, radius=5)
                if label:
                    c.text(x0 + i * cw + cw / 2, ry + 14, label, size=11, colour=MUTED, max_width=cw - 10)
        c.text(20, y + 146, note, size=12, anchor="start", colour=LINE)
    c.text(380, 404, "blue: computed this step; green: computed for the new token only", size=12, colour=MUTED)
    return c.finish(
        alt=(
            f"One step of generation for the tokens {' '.join(tokens)}. Without a cache the model "
            f"computes queries, keys and values for all {n} tokens again. With a key/value cache it "
            "computes the query, key and value of the new token only; the keys and values of the "
            "earlier tokens are read from the cache, and the new query attends to all of them."
        ),
        caption=(
            "The key/value cache: old tokens' keys and values never change (attention is causal), "
            "so each step computes one token's and reads the rest."
        ),
    )


def prompt_masking() -> Diagram:
    """Chapter 10: targets of an instruction example, the prompt and the padding set to −100."""
    x = ["Reverse", "␣'cat'", "↵Response:", "␣tac", "<|endoftext|>", "<|endoftext|>"]
    y = ["−100", "−100", "␣tac", "<|endoftext|>", "−100", "−100"]
    part = ["prompt", "prompt", "prompt", "response", "padding", "padding"]
    c = Canvas("prompt_masking", 760, 300)
    cw, x0 = 110, 96
    for name, first, last in [("prompt", 0, 2), ("response", 3, 3), ("padding", 4, 5)]:
        left, right = x0 + first * cw + 4, x0 + (last + 1) * cw - 4
        c.line([(left, 40), (left, 34), (right, 34), (right, 40)], colour=MUTED, head=False)
        c.text((left + right) / 2, 20, name, size=12, bold=True, colour=MUTED)
    c.text(x0 - 12, 70, "input x", size=13, anchor="end")
    c.text(x0 - 12, 170, "target y", size=13, anchor="end")
    for i in range(len(x)):
        kind = "frozen" if part[i] == "padding" else "data"
        b = c.box(x0 + i * cw + 4, 50, cw - 8, 40, x[i], kind=kind, mono=True, size=10.5)
        counted = y[i] != "−100"
        t = c.box(
            x0 + i * cw + 4,
            150,
            cw - 8,
            40,
            y[i],
            kind="stream" if counted else "frozen",
            mono=counted,
            size=10.5 if counted else 13,
        )
        c.arrow(b.cx, b.bottom, t.cx, t.y)
    c.text(
        x0 + 2.5 * cw,
        222,
        "the target of the last prompt token is the answer's first token: it counts",
        size=12,
        colour=LINE,
    )
    c.text(380, 256, "red: targets the loss counts; −100: ignored (cross_entropy's ignore_index)", size=12, colour=LINE)
    c.text(380, 280, "padding: end-of-text tokens as filler input, never graded", size=12, colour=MUTED)
    return c.finish(
        alt=(
            "An instruction example as training data. The input is the prompt (Reverse 'cat', "
            "Response:), the response (tac) and two end-of-text tokens as padding. Each target is the "
            "next token; targets that are prompt tokens and the padding's targets are set to minus "
            "100 and ignored, so the loss counts only the response and its end-of-text token."
        ),
        caption=(
            "Targets with the prompt masked: the model is graded only on the answer (and on "
            "stopping), never on repeating the prompt or on padding."
        ),
    )


def skip_gram() -> Diagram:
    """Chapter 2: skip-gram with negative sampling for the center word "king", window 2."""
    words = ["the", "old", "king", "sat", "upon", "his", "throne"]
    c = Canvas("skip_gram", 760, 370)
    c.group(22, 8, 506, 78, "window of 2 on each side", size=11)
    for i, word in enumerate(words):
        kind = "stream" if word == "king" else ("attn" if 0 <= i <= 4 else "plain")
        c.box(30 + i * 100, 40, 90, 36, word, kind=kind, size=14, bold=word == "king")
    v = c.box(130, 120, 170, 40, "v_king: center vector", kind="stream", size=12)
    c.arrow(275, 76, 275, v.y)
    columns = [
        ("u_sat: context\n(a real neighbour)", "u_sat · v_king\nσ → 1", "attn"),
        ("u_ship: noise\n(a random word)", "u_ship · v_king\nσ → 0", "frozen"),
        ("u_bread: noise\n(a random word)", "u_bread · v_king\nσ → 0", "frozen"),
    ]
    for k, (source, score, kind) in enumerate(columns):
        x = 340 + k * 140
        u = c.box(x, 120, 134, 44, source, kind=kind, size=12)
        pair = c.box(x, 220, 134, 50, score, kind=kind, size=12, mono=True)
        c.arrow(u.cx + 25, u.bottom, u.cx + 25, pair.y)
        c.arrow(pair.cx - 25, 300, pair.cx - 25, pair.bottom)
    c.line([(375, 76), (375, 96), (405, 96), (405, 120)])
    c.line([(v.cx, v.bottom), (v.cx, 300), (340 + 2 * 140 + 134 / 2 - 25, 300)], head=False)
    c.text(380, 330, "loss = −log σ(u_sat · v_king) − Σ log σ(−u_noise · v_king)", size=13, mono=True)
    c.text(380, 354, "one pair and K = 2 noise words; the v vectors are the embeddings we keep", size=12, colour=MUTED)
    return c.finish(
        alt=(
            "Skip-gram with negative sampling. In 'the old king sat upon his throne' the center word "
            "king has the context words the, old, sat and upon within a window of 2. The center "
            "vector v_king is scored by a dot product against the context vector of a real "
            "neighbour, u_sat, which should give a sigmoid near 1, and against the context vectors "
            "of random noise words, which should give near 0; the loss adds the negative log "
            "sigmoids."
        ),
        caption=(
            "Skip-gram with negative sampling: is this a real (center, context) pair or a fake "
            "one? Words that keep the same company end up with similar vectors."
        ),
    )


HEAD_FILLS = ["#9fbbe3", "#b9e0c5", "#f5d49a"]


def heads_split_merge(n_head: int = 3, head_dim: int = 4, n_tokens: int = 4) -> Diagram:
    """Chapter 5: one Linear for q, k, v; reshape into heads; attention per head; merge back."""
    if not (2 <= n_head <= 3 and 2 <= head_dim <= 4 and 2 <= n_tokens <= 4):
        raise ValueError("the picture fits 2-3 heads of 2-4 dimensions and 2-4 tokens")
    d = n_head * head_dim
    c = Canvas("heads_split_merge", 760, 340)
    x = c.box(20, 14, 150, 36, "x: (B, T, C)", kind="data", size=13)
    qkv = c.box(200, 14, 200, 36, "qkv: Linear C → 3·C", size=13)
    split = c.box(430, 14, 170, 36, "split: q, k, v", size=13)
    c.arrow(x.right, x.cy, qkv.x, qkv.cy)
    c.arrow(qkv.right, qkv.cy, split.x, split.cy)
    c.text(680, 32, f"C = {d}\nn_head = {n_head}", size=12, colour=LINE)
    cell = 12
    full = [[(HEAD_FILLS[j // head_dim], "") for j in range(d)] for _ in range(n_tokens)]
    q = c.grid(20, 140, full, cell=cell)
    c.line([(split.cx, split.bottom), (split.cx, 70), (q.cx, 70), (q.cx, q.y)])
    c.text(q.cx, q.bottom + 16, "q (k, v alike)", size=12, colour=LINE)
    heads, outs = [], []
    for h in range(n_head):
        one = [[(HEAD_FILLS[h], "")] * head_dim for _ in range(n_tokens)]
        y = 104 + h * 64
        heads.append(c.grid(250, y, one, cell=cell))
        outs.append(c.grid(470, y, one, cell=cell))
        c.text(250 + head_dim * cell + 8, y + n_tokens * cell / 2, f"head {h}", size=11, anchor="start", colour=MUTED)
        c.arrow(q.right, q.cy, 250, y + n_tokens * cell / 2)
        c.arrow(250 + head_dim * cell + 56, y + n_tokens * cell / 2, 470, y + n_tokens * cell / 2)
    merged = c.grid(600, 140, full, cell=cell)
    for h, o in enumerate(outs):
        c.arrow(o.right, o.cy, merged.x, merged.y + merged.h * (h + 1) / (n_head + 1))
    c.text(200, 92, "view + transpose", size=11, colour=MUTED)
    c.text(405, 92, "attention, every head at once", size=11, colour=MUTED)
    c.text(560, 92, "transpose + view", size=11, colour=MUTED)
    c.text(merged.cx, merged.bottom + 16, "heads side by side", size=11, colour=MUTED)
    proj = c.box(600, 240, merged.w, 40, "out_proj: C → C", size=12)
    c.arrow(merged.cx, merged.bottom + 28, merged.cx, proj.y)
    for cx, text in [(q.cx, "(B, T, C)"), (274, "(B, n_head, T, head_dim)"), (494, "(B, n_head, T, head_dim)")]:
        c.text(cx, 318, text, size=12, mono=True)
    c.text(proj.cx, 318, "(B, T, C)", size=12, mono=True)
    return c.finish(
        alt=(
            f"Multi-head attention with C = {d} and {n_head} heads of {head_dim} dimensions. One "
            "linear layer qkv makes queries, keys and values for all heads; split gives q, k and v, "
            "each (B, T, C). A view and a transpose cut q (and k, v) into heads, shape (B, n_head, T, "
            "head_dim); attention runs on every head at once; a transpose and a view put the heads' "
            "outputs side by side again, (B, T, C), and out_proj mixes them."
        ),
        caption=(
            "Many heads for the price of one: cut the columns into heads with a reshape, attend in "
            "each head separately, put the heads back side by side."
        ),
    )


def induction_circuit() -> Diagram:
    """Chapter 11: a previous-token head (layer 1) and an induction head (layer 2) working together."""
    c = Canvas("induction_circuit", 760, 330)
    tokens = ["…", "Harry", "Potter", "…", "…", "Harry", "Potter"]
    boxes = []
    for i, tok in enumerate(tokens):
        kind = "stream" if i == 6 else ("data" if tok != "…" else "plain")
        boxes.append(c.box(30 + i * 100, 150, 86, 40, tok, kind=kind, size=14, bold=i == 6))
    c.text(boxes[6].cx, 206, "predicted", size=12, colour=STREAM_RED)
    harry, potter, again = boxes[1], boxes[2], boxes[5]
    green = PALETTE["attn"][1]
    # (1) the previous-token head: Potter attends to the token before it
    c.line(
        [(potter.cx - 10, potter.y), (potter.cx - 10, 118), (harry.cx, 118), (harry.cx, harry.y)], colour=green, width=2
    )
    c.text(harry.cx - 12, 116, "(1) previous-token\nhead, layer 1", size=12, anchor="end", colour=green, bold=True)
    note = c.box(potter.x - 40, 204, potter.w + 80, 34, "notes: “I follow Harry”", kind="attn", size=11)
    c.arrow(potter.cx, potter.bottom, potter.cx, note.y, colour=green)
    # (2) the induction head: the second Harry looks for "I follow Harry"
    blue = PALETTE["layer"][1]
    c.line(
        [(again.cx, again.bottom), (again.cx, 270), (note.cx + 20, 270), (note.cx + 20, note.bottom)],
        colour=blue,
        width=2,
    )
    c.text(
        again.cx - 140,
        288,
        "(2) induction head, layer 2: its query “Harry” matches that note",
        size=12,
        colour=blue,
        bold=True,
    )
    # ... and copies the token found there
    c.line(
        [(potter.cx + 10, potter.y), (potter.cx + 10, 60), (boxes[6].cx, 60), (boxes[6].cx, boxes[6].y)],
        colour=blue,
        dashed=True,
        width=2,
    )
    c.text((potter.cx + boxes[6].cx) / 2, 44, "(2) copies the token it found: Potter", size=12, colour=blue)
    c.text(
        380,
        316,
        "one layer of attention cannot do this: its keys hold only each token and its position",
        size=12,
        colour=MUTED,
    )
    return c.finish(
        alt=(
            "An induction circuit on the text 'Harry Potter ... Harry'. In layer 1 a previous-token "
            "head lets the position of Potter attend to the token before it, so it carries the note "
            "'I follow Harry'. In layer 2 an induction head at the second Harry searches for that "
            "note, finds the position of Potter, and copies its token, so the model predicts Potter."
        ),
        caption=(
            "An induction circuit (Olsson et al., 2022): two heads in two layers; the second searches "
            "with information that the first one wrote."
        ),
    )


def lstm_cell() -> Diagram:
    """Chapter 4: one LSTM step; the cell c changes only by × f and + i·g."""
    c = Canvas("lstm_cell", 760, 360)
    red = STREAM_RED
    c.line([(20, 70), (740, 70)], colour=red, width=3)
    c.text(20, 50, "c_(t−1): the cell", size=12, anchor="start", colour=red, bold=True)
    c.text(740, 50, "c_t", size=12, anchor="end", colour=red, bold=True)
    gates = [
        ("f = σ(…)\nforget", 240),
        ("i = σ(…)\ninput", 355),
        ("g = tanh(…)\ncandidate", 470),
        ("o = σ(…)\noutput", 595),
    ]
    boxes = [c.box(cx - 50, 190, 100, 44, text, kind="norm" if "σ" in text else "layer", size=12) for text, cx in gates]
    forget = c.circle(240, 70, 12, "×", kind="stream", size=15)
    c.arrow(240, boxes[0].y, 240, forget.bottom)
    ig = c.circle(412, 130, 11, "×", kind="plain", size=14)
    c.line([(355, boxes[1].y), (355, 130), (ig.x, 130)])
    c.line([(470, boxes[2].y), (470, 130), (ig.right, 130)])
    add = c.circle(412, 70, 12, "+", kind="stream", size=16)
    c.arrow(412, ig.y, 412, add.bottom)
    c.circle(700, 70, 4, kind="stream")
    th = c.box(660, 100, 80, 34, "tanh", size=12)
    c.arrow(700, 74, 700, th.y)
    out = c.circle(700, 212, 11, "×", kind="plain", size=14)
    c.arrow(700, th.bottom, 700, out.y)
    c.arrow(boxes[3].right, 212, out.x, 212)
    h = c.box(650, 268, 100, 40, "h_t", kind="data", size=14)
    c.arrow(700, out.bottom, 700, h.y)
    inp = c.box(20, 268, 140, 40, "h_(t−1), x_t", kind="data", size=13)
    c.line([(inp.right, 288), (595, 288)], head=False)
    for _, cx in gates:
        c.arrow(cx, 288, cx, 234)
    c.text(380, 334, "σ: a gate between 0 and 1 per number; ×: element-wise product", size=12, colour=MUTED)
    c.text(380, 350, "c_t = f · c_(t−1) + i · g,   h_t = o · tanh(c_t)", size=12, mono=True, colour=LINE)
    return c.finish(
        alt=(
            "One step of an LSTM. The cell c runs along the top: it is multiplied by the forget gate "
            "f and then the input gate i times the candidate g is added, giving c_t. The gates f, i "
            "and o (sigmoids) and the candidate g (tanh) are computed from h_(t−1) and x_t. The new "
            "hidden state h_t is the output gate o times tanh of c_t."
        ),
        caption=(
            "An LSTM cell (Hochreiter & Schmidhuber, 1997; Gers et al., 2000): the cell is changed "
            "only by a gated multiplication and an addition, so it can carry a fact for many steps."
        ),
    )


def window_model(words: tuple[str, ...] = ("long", "live", "the", "king", "is")) -> Diagram:
    """Chapter 4: Bengio et al.'s model: the embeddings of the last three words, concatenated."""
    if not 4 <= len(words) <= 6:
        raise ValueError(f"give 4 to 6 words, got {len(words)}")
    c = Canvas("window_model", 760, 330)
    n = len(words)
    xs = [380 - (n * 110 - 20) / 2 + i * 110 for i in range(n)]
    for i, (word, x) in enumerate(zip(words, xs, strict=True)):
        seen = i >= n - 3
        c.box(x, 270, 90, 38, word, kind="data" if seen else "frozen", size=14)
        if seen:
            cells = [[(PALETTE["layer"][1] if (r + i) % 3 else "#9fbbe3", "")] for r in range(4)]
            g = c.grid(x + 37, 190, cells, cell=16)
            c.arrow(x + 45, 270, x + 45, g.bottom)
            c.arrow(x + 45, g.y, x + 45, 150)
            c.text(
                x + 45 + 16, 212, f"e_{'t' if i == n - 1 else f't−{n - 1 - i}'}", size=11, anchor="start", colour=MUTED
            )
    left, right = xs[n - 3], xs[n - 1] + 90
    cat = c.box(left, 114, right - left, 36, "[e_(t−2); e_(t−1); e_t]: side by side", size=12)
    hid = c.box(left, 64, right - left, 34, "h = tanh(W [·] + b)", size=12)
    out = c.box(left, 14, right - left, 34, f"logits = U h + c: what follows “{words[-1]}”?", kind="stream", size=12)
    c.arrow(cat.cx, cat.y, hid.cx, hid.bottom)
    c.arrow(hid.cx, hid.y, out.cx, out.bottom)
    c.text((xs[0] + xs[n - 4] + 90) / 2, 240, "out of the window:\nthe model never sees these", size=12, colour=MUTED)
    return c.finish(
        alt=(
            f"A window model on the words {' '.join(words)}: the embeddings of the last three words, "
            f"{', '.join(words[-3:])}, are put side by side, pass through a hidden layer with tanh, "
            "and a linear layer scores every word of the vocabulary as the next one. The earlier "
            "words are outside the window and invisible to the model."
        ),
        caption=(
            "The window model (Bengio et al., 2003): three embeddings, side by side, one hidden "
            "layer. Whatever lies further back cannot be used at all."
        ),
    )
