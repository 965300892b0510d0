"""Diagrams of model architectures: what is inside each network the book builds.

Names follow the library (``wte``, ``wpe``, ``h``, ``ln_1``, ``attn``, ``ln_2``, ``mlp``,
``ln_f``, ``lm_head``), and each picture shows the arrangement the book's code uses: GPT-2
is pre-norm, chapter 6's encoder–decoder is post-norm like the 2017 paper.
"""

from __future__ import annotations

import itertools

from llmbook.diagrams.canvas import LINE, MUTED, PALETTE, Canvas, Diagram

STREAM = PALETTE["stream"][1]


def gpt_block() -> Diagram:
    """Chapter 7: the whole GPT on the left, one pre-norm transformer block on the right."""
    c = Canvas("gpt_block", 760, 520)
    x, w = 20, 210
    ids = c.box(x, 20, w, 40, "token ids", kind="data")
    emb = c.box(x, 90, w, 54, "wte[id] + wpe[position]\nembeddings", size=13)
    c.box(x + 8, 190, w, 70, kind="layer")  # the stack behind the block
    c.box(x + 4, 182, w, 70, kind="layer")
    block = c.box(x, 174, w, 70, "transformer block h[i]\nrepeated n_layer times", size=13)
    ln_f = c.box(x, 296, w, 40, "ln_f: final layer norm", kind="norm", size=13)
    head = c.box(x, 366, w, 54, "lm_head\n(tied: reuses wte)", size=13)
    logits = c.box(x, 450, w, 54, "logits: one score per\nvocabulary token", kind="data", size=13)
    for a, b in [(ids, emb), (emb, block), (block, ln_f), (ln_f, head), (head, logits)]:
        c.arrow(a.cx, a.bottom, b.cx, b.y)
    # the zoom into one block
    c.group(300, 14, 440, 490, "inside one block h[i] (pre-norm, as in GPT-2)")
    c.line([(block.right, block.y), (300, 14)], colour=MUTED, dashed=True, head=False)
    c.line([(block.right + 8, block.bottom + 16), (300, 504)], colour=MUTED, dashed=True, head=False)
    sx = 370
    c.text(sx - 20, 56, "x in: the residual stream", size=13, anchor="start", colour=STREAM)
    c.line([(sx, 68), (sx, 432)], colour=STREAM, width=4)
    c.text(sx, 452, "x out", size=13, colour=STREAM)
    bx, bw = 440, 280
    for tap, ln_name, sub_text, sub_kind, sub_h in [
        (100, "ln_1: layer norm", "attn: causal self-attention\nn_head heads (chapter 5)", "attn", 58),
        (252, "ln_2: layer norm", "mlp: Linear n_embd → 4·n_embd\nGELU\nLinear 4·n_embd → n_embd", "layer", 70),
    ]:
        c.circle(sx, tap, 4, kind="stream")
        ln = c.box(bx, tap - 18, bw, 36, ln_name, kind="norm", size=13)
        c.arrow(sx + 4, tap, bx, tap)
        sub = c.box(bx, ln.bottom + 22, bw, sub_h, sub_text, kind=sub_kind, size=13)
        c.arrow(ln.cx, ln.bottom, sub.cx, sub.y)
        c.arrow(bx, sub.cy, sx + 13, sub.cy)
        c.circle(sx, sub.cy, 12, "+", kind="stream", size=18)
    c.text(580, 470, "x = x + attn(ln_1(x))\nx = x + mlp(ln_2(x))", size=13, mono=True)
    return c.finish(
        alt=(
            "A GPT: token ids become embeddings wte plus wpe, pass through n_layer transformer "
            "blocks, a final layer norm ln_f and the tied output head lm_head, giving one logit "
            "per vocabulary token. Inside one block the residual stream x runs straight down; "
            "ln_1 then causal self-attention attn add their result to it, then ln_2 then the "
            "mlp (Linear, GELU, Linear) add theirs."
        ),
        caption=(
            "A GPT, and one of its blocks. Each block reads a normalised copy of the residual "
            "stream and adds its result back: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))."
        ),
    )


def attention_qkv(n_tokens: int = 5) -> Diagram:
    """Chapter 5: queries, keys and values from X, scores, the causal mask, softmax, weights·V."""
    if not 2 <= n_tokens <= 6:
        raise ValueError(f"n_tokens must be between 2 and 6 to fit the picture, got {n_tokens}")
    c = Canvas("attention_qkv", 760, 440)
    x = c.box(20, 60, 90, 290, "X\nT tokens\n× d", kind="data", size=14)
    q = c.box(150, 60, 130, 50, "Q = X·W_q", kind="attn")
    k = c.box(150, 175, 130, 50, "K = X·W_k", kind="attn")
    v = c.box(150, 300, 130, 50, "V = X·W_v", kind="attn")
    for b in (q, k, v):
        c.arrow(x.right, b.cy, b.x, b.cy)
    s = c.box(320, 115, 120, 56, "scores\nQ·Kᵀ / √d", size=14)
    c.line([(q.right, q.cy), (380, q.cy), (380, s.y)])
    c.line([(k.right, k.cy), (380, k.cy), (380, s.bottom)])
    cell = 22
    gx, gy = 535 - n_tokens * cell / 2, 143 - n_tokens * cell / 2
    green, grey = "#b9e0c5", PALETTE["frozen"][0]
    cells = [[(green, "") if j <= i else (grey, "−∞") for j in range(n_tokens)] for i in range(n_tokens)]
    grid = c.grid(gx, gy, cells, cell=cell, size=11)
    c.text(535, gy - 14, "causal mask", size=13, bold=True)
    c.text(535, grid.bottom + 24, "rows: queries\ncolumns: keys", size=11, colour=MUTED)
    c.arrow(s.right, s.cy, grid.x, s.cy)
    sm = c.box(630, 115, 110, 56, "softmax\nper row", size=14)
    c.arrow(grid.right, sm.cy, sm.x, sm.cy)
    av = c.box(610, 295, 130, 60, "weights · V", kind="attn")
    c.arrow(sm.cx, sm.bottom, sm.cx, av.y)
    c.text(sm.cx + 8, 235, "weights", size=12, anchor="start", colour=MUTED)
    c.arrow(v.right, v.cy, av.x, v.cy)
    out = c.box(610, 385, 130, 40, "output: T × d", kind="data", size=13)
    c.arrow(av.cx, av.bottom, out.cx, out.y)
    return c.finish(
        alt=(
            f"Causal self-attention: the input X (T tokens by d) is multiplied by W_q, W_k and "
            f"W_v to give queries Q, keys K and values V. Q times K transposed over root d gives "
            f"a T by T grid of scores; a causal mask sets every score above the diagonal to minus "
            f"infinity (drawn for {n_tokens} tokens), softmax turns each row into weights, and the "
            f"weights times V give the output, T by d."
        ),
        caption=(
            "Causal self-attention: scores compare every query with every key, the mask hides "
            "the future (−∞ becomes weight 0 after softmax), and the weights mix the values."
        ),
    )


def autoencoder(widths: tuple[int, ...] = (64, 128, 8, 128, 64)) -> Diagram:
    """Chapter 2: the hourglass, 64 pixels → 128 → a code of 8 → 128 → 64 pixels."""
    if len(widths) != 5 or min(widths) < 1:
        raise ValueError(f"widths must be five positive layer sizes, got {widths}")
    c = Canvas("autoencoder", 760, 370)
    xs, bar, mid = [70, 220, 380, 540, 690], 30, 150
    scale = 240 / max(widths)
    heights = [max(6.0, n * scale) for n in widths]
    labels = ["Linear\n+ ReLU", "Linear", "Linear\n+ ReLU", "Linear\n+ sigmoid"]
    for i in range(4):
        x0, x1 = xs[i] + bar / 2, xs[i + 1] - bar / 2
        h0, h1 = heights[i] / 2, heights[i + 1] / 2
        c.polygon([(x0, mid - h0), (x1, mid - h1), (x1, mid + h1), (x0, mid + h0)], kind="layer")
        c.text((x0 + x1) / 2, mid, labels[i], size=12, max_width=x1 - x0 - 8)
    names = ["input\n{} pixels", "{}", "code\n{} numbers", "{}", "output\n{} pixels"]
    for i, (xc, h, n) in enumerate(zip(xs, heights, widths, strict=True)):
        kind = "data" if i in (0, 4) else ("stream" if i == 2 else "layer")
        c.box(xc - bar / 2, mid - h / 2, bar, h, kind=kind, radius=4)
        c.text(xc, 292, names[i].format(n), size=13, bold=i == 2)
    c.text((xs[0] + xs[2]) / 2, 14, "encoder", size=14, bold=True, colour=PALETTE["layer"][1])
    c.text((xs[2] + xs[4]) / 2, 14, "decoder", size=14, bold=True, colour=PALETTE["layer"][1])
    c.line([(xs[4], 316), (xs[4], 334), (xs[0], 334), (xs[0], 316)], colour=STREAM, dashed=True)
    c.text((xs[0] + xs[4]) / 2, 352, "loss: mean of (output − input)²", size=12, colour=STREAM)
    return c.finish(
        alt=(
            f"An autoencoder drawn as an hourglass: an input of {widths[0]} pixels narrows through "
            f"a layer of {widths[1]} to a code of {widths[2]} numbers, then widens through "
            f"{widths[3]} back to {widths[4]} output pixels; the loss compares output and input."
        ),
        caption=(
            f"An autoencoder: the encoder squeezes {widths[0]} pixels into {widths[2]} numbers, "
            "the decoder rebuilds the image from them, and the image itself is the target."
        ),
    )


def rnn_unrolled(words: tuple[str, ...] = ("the", "king", "is", "dead")) -> Diagram:
    """Chapter 4: one RNN cell applied word after word, its hidden state carried along."""
    if not 2 <= len(words) <= 4:
        raise ValueError(f"give 2 to 4 words to fit the picture, got {len(words)}")
    c = Canvas("rnn_unrolled", 760, 330)
    sub = "₀₁₂₃₄"
    h0 = c.box(20, 130, 70, 60, "h₀ = 0", kind="stream", size=13)
    c.text(55, 50, "next\nword", size=12, colour=MUTED)
    c.text(55, 270, "input\nword", size=12, colour=MUTED)
    prev = h0
    for t, word in enumerate(words, start=1):
        cx = 130 + (t - 1) * 160 + 60
        cell = c.box(cx - 60, 130, 120, 60, f"RNN cell\nh{sub[t]}", size=13)
        inp = c.box(cx - 50, 250, 100, 40, word, kind="data")
        nxt = words[t] if t < len(words) else "?"
        out = c.box(cx - 50, 30, 100, 40, f"→ {nxt}", kind="data")
        c.arrow(inp.cx, inp.y, cell.cx, cell.bottom)
        c.arrow(cell.cx, cell.y, out.cx, out.bottom)
        c.arrow(prev.right, 160, cell.x, 160, colour=STREAM, width=2)
        if t > 1:
            c.text((prev.right + cell.x) / 2, 146, f"h{sub[t - 1]}", size=12, colour=STREAM)
        prev = cell
    c.text(
        380, 316, "h_t = tanh(W_xh x_t + W_hh h_(t−1) + biases): the same weights at every step", size=12, colour=LINE
    )
    return c.finish(
        alt=(
            f"A recurrent network unrolled over the words {', '.join(words)}: at each step one "
            "RNN cell with the same weights reads the word and the previous hidden state h and "
            "writes a new h, which predicts the next word and is passed to the next step; h0 is "
            "zero."
        ),
        caption=(
            "A recurrent network, unrolled: the hidden state is the only memory, carried from "
            "word to word, so step t must wait for step t − 1."
        ),
    )


def _stack(
    c: Canvas, cx: float, w: float, bottom: float, items: list[tuple[str, str, float]], residual: bool = False
) -> list:
    """Boxes stacked upwards from ``bottom``, arrows between them; returns the boxes."""
    boxes, y = [], bottom
    for text, kind, h in items:
        y -= h
        boxes.append(c.box(cx - w / 2, y, w, h, text, kind=kind, size=13))
        y -= 16
    for a, b in itertools.pairwise(boxes):
        c.arrow(a.cx, a.y, b.cx, b.bottom)
    if residual:  # post-norm: the input of each sub-layer skips to its "add & norm"
        for i in range(0, len(boxes) - 1, 2):
            sub, norm = boxes[i], boxes[i + 1]
            left = sub.x - 14
            c.line(
                [(sub.cx, sub.bottom + 8), (left, sub.bottom + 8), (left, norm.cy), (norm.x, norm.cy)], colour=STREAM
            )
    return boxes


def encoder_decoder() -> Diagram:
    """Chapter 6: the 2017 transformer, post-norm, as the chapter's date translator builds it."""
    c = Canvas("encoder_decoder", 760, 620)
    w = 230
    ex, dx = 190, 580
    src = c.box(ex - w / 2, 566, w, 36, "source tokens", kind="data", size=13)
    tgt = c.box(dx - w / 2, 566, w, 36, "output so far, shifted right", kind="data", size=13)
    e_emb = c.box(ex - w / 2, 500, w, 44, "embedding\n+ sinusoidal positions", size=13)
    d_emb = c.box(dx - w / 2, 500, w, 44, "embedding\n+ sinusoidal positions", size=13)
    c.arrow(src.cx, src.y, e_emb.cx, e_emb.bottom)
    c.arrow(tgt.cx, tgt.y, d_emb.cx, d_emb.bottom)
    an = ("add & norm", "norm", 26.0)
    enc = _stack(
        c,
        ex,
        w - 20,
        468,
        [("self-attention\n(every token sees all)", "attn", 44), an, ("feed-forward", "layer", 36), an],
        residual=True,
    )
    dec = _stack(
        c,
        dx,
        w - 20,
        468,
        [
            ("masked self-attention\n(earlier tokens only)", "attn", 44),
            an,
            ("cross-attention\nkeys, values: encoder", "attn", 44),
            an,
            ("feed-forward", "layer", 36),
            an,
        ],
        residual=True,
    )
    c.group(ex - w / 2 - 20, enc[-1].y - 40, w + 40, 468 - enc[-1].y + 52, "encoder × N")
    c.group(dx - w / 2 - 20, dec[-1].y - 40, w + 40, 468 - dec[-1].y + 52, "decoder × N")
    c.arrow(e_emb.cx, e_emb.y, enc[0].cx, enc[0].bottom)
    c.arrow(d_emb.cx, d_emb.y, dec[0].cx, dec[0].bottom)
    cross = dec[2]
    top = enc[-1].y - 60
    c.line(
        [(ex, enc[-1].y), (ex, top), (cross.x - 44, top), (cross.x - 44, cross.cy), (cross.x, cross.cy)],
        colour=PALETTE["attn"][1],
        width=2,
    )
    c.text(ex, top - 14, "one vector per source token", size=12, colour=PALETTE["attn"][1])
    lin = c.box(dx - w / 2, 66, w, 36, "linear + softmax", size=13)
    probs = c.box(dx - w / 2, 12, w, 36, "next-token probabilities", kind="data", size=13)
    c.arrow(dec[-1].cx, dec[-1].y, lin.cx, lin.bottom)
    c.arrow(lin.cx, lin.y, probs.cx, probs.bottom)
    return c.finish(
        alt=(
            "The original encoder-decoder transformer, drawn bottom to top. Encoder: source tokens, "
            "embedding plus sinusoidal positions, then N blocks of self-attention and feed-forward, "
            "each followed by add and norm. Decoder: the output so far shifted right, embedding plus "
            "positions, then N blocks of masked self-attention, cross-attention whose keys and values "
            "come from the encoder's output, and feed-forward, each followed by add and norm; a "
            "linear layer and softmax give next-token probabilities."
        ),
        caption=(
            "The encoder–decoder transformer (Vaswani et al., 2017), post-norm as in the paper: "
            "each sub-layer's input is added back to its output, then normalised (red lines)."
        ),
    )


def classification_head(tokens: tuple[str, ...] = ("Win", "␣a", "␣free", "␣prize", "<|endoftext|>")) -> Diagram:
    """Chapter 9: the GPT's hidden state at the last real token goes into a 2-way linear head."""
    if not 2 <= len(tokens) <= 5:
        raise ValueError(f"give 2 to 5 tokens to fit the picture, got {len(tokens)}")
    c = Canvas("classification_head", 760, 380)
    cols = [*tokens, "pad"]
    widths = [max(64.0, 9.0 * len(t) + 16) for t in cols]
    xs, x = [], 20.0
    for wd in widths:
        xs.append(x)
        x += wd + 8
    right = x - 8
    gpt = c.box(20, 200, right - 20, 60, "pretrained GPT: wte + wpe, blocks h, ln_f\n(lm_head is not used)", size=13)
    last = len(tokens) - 1
    for i, (t, x0, wd) in enumerate(zip(cols, xs, widths, strict=True)):
        pad = t == "pad"
        tok = c.box(x0, 310, wd, 40, t, kind="frozen" if pad else "data", size=12, mono=not pad)
        c.arrow(tok.cx, tok.y, tok.cx, gpt.bottom)
        fill = STREAM if i == last else (PALETTE["frozen"][1] if pad else "#9fb7d9")
        cells = [[(fill if r % 2 == 0 or i == last else "#c9d6e8", "")] for r in range(5)]
        vec = c.grid(x0 + wd / 2 - 9, 80, cells, cell=18)
        c.arrow(tok.cx, gpt.y, tok.cx, vec.bottom)
    c.text(
        20,
        22,
        "final hidden state at every position; only the last real token's is read",
        size=12,
        anchor="start",
        colour=LINE,
    )
    lx = xs[last] + widths[last] / 2
    hx = right + 20
    head = c.box(hx, 66, 740 - hx, 64, "head: Linear\nn_embd → 2", kind="stream", size=13)
    c.line([(lx, 80), (lx, 44), (head.cx, 44), (head.cx, head.y)], colour=STREAM, width=2)
    out = c.box(hx, 160, 740 - hx, 60, "softmax:\nP(ham), P(spam)", kind="data", size=13)
    c.arrow(head.cx, head.bottom, out.cx, out.y)
    c.text(right - 20, 366, "padding on the right: never read", size=11, anchor="end", colour=MUTED)
    return c.finish(
        alt=(
            f"Classification with a GPT: the tokens {' '.join(tokens)} and one padding token go "
            "through the pretrained GPT, which gives a hidden state at every position. Only the "
            "hidden state of the last real token, the end-of-text token, goes into a new linear "
            "head with two outputs, and softmax turns them into the probabilities of ham and spam."
        ),
        caption=(
            "Classification: a new linear head reads the final hidden state of the last real "
            "token, the only position that has seen the whole message."
        ),
    )


def lora() -> Diagram:
    """Chapter 10: h = W x + (α/r)·B A x, with W frozen, A (r × in) random, B (out × r) zero at first."""
    c = Canvas("lora", 760, 400)
    x = c.box(270, 320, 220, 40, "x (in numbers)", kind="data")
    w = c.box(80, 150, 220, 130, "W\nout × in\nfrozen", kind="frozen", size=15)
    c.polygon([(430, 280), (690, 280), (590, 232), (530, 232)], kind="layer")
    c.text(560, 262, "A: r × in (random)", size=12, max_width=200)
    c.polygon([(530, 202), (590, 202), (690, 150), (430, 150)], kind="layer")
    c.text(560, 168, "B: out × r (zeros)", size=12, max_width=200)
    c.text(600, 217, "r numbers", size=12, anchor="start", colour=LINE)
    c.arrow(560, 232, 560, 202)
    scale = c.box(520, 98, 80, 32, "× α / r", size=13)
    c.arrow(560, 150, 560, scale.bottom)
    plus = c.circle(380, 84, 12, "+", kind="stream", size=18)
    c.line([(w.cx, w.y), (w.cx, plus.cy), (plus.x, plus.cy)])
    c.line([(scale.cx, scale.y), (scale.cx, plus.cy), (plus.right, plus.cy)])
    h = c.box(250, 10, 260, 40, "h = W x + (α/r) · B A x", kind="data", mono=True, size=13)
    c.arrow(plus.cx, plus.y, h.cx, h.bottom)
    c.line([(x.cx, x.y), (x.cx, 300), (w.cx, 300), (w.cx, w.bottom)])
    c.line([(x.cx, 300), (560, 300), (560, 280)])
    c.text(380, 385, "trained: only A and B, r·(in + out) numbers per matrix; W never changes", size=12, colour=LINE)
    return c.finish(
        alt=(
            "LoRA: the input x goes through the frozen weight matrix W (out by in) and, in "
            "parallel, through A (r by in, random at the start) down to r numbers and B (out by r, "
            "zero at the start) back up; the second path is scaled by alpha over r and added to "
            "W x, giving h = W x + (alpha / r) B A x."
        ),
        caption=(
            "LoRA: W stays frozen and a thin detour B·A of rank r learns the change. B starts at "
            "zero, so at step 0 the model is exactly the base model."
        ),
    )
