"""Chapter 13's diagrams: what later models changed in GPT-2's block, and shared key/value heads.

Each picture follows ``llmbook``'s code for the options ``GPTConfig`` switches on: RMSNorm
for every LayerNorm (``norm``), rotary positions applied to queries and keys inside attention
instead of a ``wpe`` table (``positions``), SwiGLU for the GELU block with the gate and up
projections stacked in ``c_fc`` (``mlp``), fewer key/value heads than query heads
(``n_kv_head``), no biases (``bias``). Query head ``i`` uses key/value head
``i // (n_head // n_kv_head)``, as ``repeat_interleave`` in ``llmbook.attention`` does.
"""

from __future__ import annotations

from llmbook.diagrams.canvas import LINE, MUTED, PALETTE, Box, Canvas, Diagram

STREAM = PALETTE["stream"][1]
HIGHLIGHT = "#ffe08a"  # a marker pen behind what changed
Q_FILL, KV_FILL = "#b9e0c5", "#f3c98b"


def _halo(c: Canvas, x: float, y: float, w: float, h: float) -> None:
    """The highlighter mark drawn behind a changed part (call before drawing the part)."""
    c.rect(x - 5, y - 5, w + 10, h + 10, HIGHLIGHT, radius=11)


def _column(c: Canvas, x0: float, width: float, llama: bool) -> None:
    """One model, top to bottom: ids, embedding, one pre-norm block on the stream, ln_f, head."""
    cx, sx = x0 + width / 2, x0 + 22
    bx, bw = x0 + 56, width - 68
    title = "Llama-style (this chapter)" if llama else "GPT-2 (chapter 7)"
    c.text(cx, 18, title, size=14, bold=True, max_width=width)
    note = "no biases anywhere (bias=False)" if llama else "biases in attn, mlp and every LayerNorm"
    if llama:
        _halo(c, cx - 118, 32, 236, 18)
    c.text(cx, 41, note, size=12, colour=LINE, max_width=width - 10)
    ids = c.box(x0, 62, width, 28, "token ids", kind="data", size=13)
    if llama:
        _halo(c, x0, 106, width, 40)
    emb_text = (
        "wte[id] only: no position table\npositions enter inside attention"
        if llama
        else ("wte[id] + wpe[position]\nlearned position vectors added")
    )
    emb = c.box(x0, 106, width, 40, emb_text, size=12)
    c.arrow(cx, ids.bottom, cx, emb.y)
    c.group(x0 + 38, 164, width - 38, 386, "block h[i], repeated n_layer times", size=12)
    norm = "RMSNorm" if llama else "LayerNorm"

    def add_back(src: Box, y: float) -> None:
        c.arrow(src.x, y, sx + 11, y)
        c.circle(sx, y, 11, "+", kind="stream", size=16)

    def norm_tap(y: float, label: str) -> Box:
        """A norm reading the stream at height y (highlighted in the Llama-style block)."""
        if llama:
            _halo(c, bx, y - 15, bw, 30)
        c.circle(sx, y, 4, kind="stream")
        box = c.box(bx, y - 15, bw, 30, label, kind="norm", size=13)
        c.arrow(sx + 4, y, bx, y)
        return box

    # attention: ln_1, then attn, added back to the stream
    ln1 = norm_tap(214, f"ln_1: {norm}")
    attn_text = (
        "attn: causal self-attention\nRoPE: q and k turned by position\n"
        "GQA: fewer key/value heads, each\nshared by a group of query heads"
        if llama
        else "attn: causal self-attention\nn_head query heads, each with\nits own key and value head"
    )
    if llama:
        _halo(c, bx, 248, bw, 72)
    attn = c.box(bx, 248, bw, 72, attn_text, kind="attn", size=12)
    c.arrow(ln1.cx, ln1.bottom, attn.cx, attn.y)
    add_back(attn, attn.cy)
    # feed-forward: ln_2, then the MLP, added back
    ln2 = norm_tap(356, f"ln_2: {norm}")
    if llama:
        _halo(c, bx, 390, bw, 140)
        half = (bw - 10) / 2
        gate = c.box(bx, 390, half, 30, "gate: Linear", size=12)
        up = c.box(bx + half + 10, 390, half, 30, "up: Linear", size=12)
        silu = c.box(bx + 20, 438, half - 40, 24, "SiLU", size=12)
        c.arrow(gate.cx, gate.bottom, silu.cx, silu.y)
        times = c.circle(bx + bw / 2, 476, 10, "×", kind="plain", size=14)
        c.line([(silu.cx, silu.bottom), (silu.cx, times.cy), (times.x, times.cy)])
        c.line([(up.cx, up.bottom), (up.cx, times.cy), (times.right, times.cy)])
        down = c.box(bx, 500, bw, 30, "down: Linear, ≈ 8/3·n_embd → n_embd", size=12)
        c.arrow(times.cx, times.bottom, times.cx, down.y)
        c.line([(ln2.cx, ln2.bottom), (ln2.cx, 380), (gate.cx, 380), (gate.cx, gate.y)])
        c.line([(ln2.cx, 380), (up.cx, 380), (up.cx, up.y)])
    else:
        fc = c.box(bx, 390, bw, 30, "Linear n_embd → 4·n_embd", size=12)
        gelu = c.box(bx + bw / 2 - 50, 438, 100, 24, "GELU", size=12)
        down = c.box(bx, 500, bw, 30, "Linear 4·n_embd → n_embd", size=12)
        c.arrow(ln2.cx, ln2.bottom, fc.cx, fc.y)
        c.arrow(fc.cx, fc.bottom, gelu.cx, gelu.y)
        c.arrow(gelu.cx, gelu.bottom, down.cx, down.y)
    add_back(down, down.cy)
    # the stream, the final norm and the head
    c.line([(sx, emb.bottom), (sx, 578)], colour=STREAM, width=4)
    if llama:
        _halo(c, x0, 580, width, 28)
    ln_f = c.box(x0, 580, width, 28, f"ln_f: {norm}", kind="norm", size=13)
    head = c.box(x0, 628, width, 28, "lm_head: one logit per vocabulary token", kind="data", size=12)
    c.arrow(cx, ln_f.bottom, cx, head.y)


def modern_block() -> Diagram:
    """Chapter 13: GPT-2's model beside a Llama-style one, the changed parts highlighted."""
    c = Canvas("modern_block", 760, 700)
    _column(c, 16, 352, llama=False)
    _column(c, 392, 352, llama=True)
    c.rect(150, 675, 36, 14, HIGHLIGHT, radius=4)
    c.text(
        194,
        682,
        "changed from GPT-2; both are pre-norm: x = x + attn(ln_1(x)), x = x + mlp(ln_2(x))",
        size=12,
        anchor="start",
        colour=LINE,
    )
    return c.finish(
        alt=(
            "Two decoder models side by side, each drawn top to bottom: token ids, embedding, one "
            "pre-norm block on the residual stream repeated n_layer times, a final norm and the "
            "output head. GPT-2 on the left: biases in attention, MLP and LayerNorm, token plus learned position "
            "vectors wte plus wpe, LayerNorm before attention and before the MLP, attention with "
            "its own key and value head per query head, an MLP of Linear to 4 n_embd, GELU and "
            "Linear back, and a final LayerNorm. The Llama-style model on the right, with the "
            "changes highlighted: no biases, token embeddings only with no position table, "
            "RMSNorm in every norm, attention that rotates queries and keys by position (RoPE) "
            "and shares each key/value head among a group of query heads (GQA), and a SwiGLU "
            "block in which a gate and an up projection are computed, the gate passes through "
            "SiLU, the two are multiplied and a down projection returns to n_embd."
        ),
        caption=(
            "What changed between GPT-2 and a Llama-style model: the same pre-norm decoder, "
            "with RMSNorm, rotary positions inside attention, grouped key/value heads, SwiGLU "
            "and no biases (highlighted)."
        ),
    )


def grouped_query_attention(n_kv_head: int = 2) -> Diagram:
    """Chapter 13: 8 query heads with 8 (multi-head), ``n_kv_head`` (grouped) or 1 (multi-query)
    key/value heads, and the KV cache of each drawn to scale."""
    n_head = 8
    if n_kv_head not in (2, 4):
        raise ValueError(f"n_kv_head must be 2 or 4 (a divisor of 8 between 1 and 8), got {n_kv_head!r}")
    kv_heads = (n_head, n_kv_head, 1)
    c = Canvas("grouped_query_attention", 760, 340)
    names = {n_head: "multi-head (GPT-2)", 1: "multi-query (MQA)"}
    cell, gap = 22, 5
    row = n_head * cell + (n_head - 1) * gap
    for p, h_kv in enumerate(kv_heads):
        x0 = 16 + p * 248
        cx = x0 + 116
        group = n_head // h_kv
        c.text(cx, 20, names.get(h_kv, "grouped-query (GQA)"), size=14, bold=True, max_width=232)
        heads = "head" if h_kv == 1 else "heads"
        c.text(cx, 42, f"{n_head} query, {h_kv} key/value {heads}", size=12, colour=LINE, max_width=232)
        left = cx - row / 2
        q_centres = [left + i * (cell + gap) + cell / 2 for i in range(n_head)]
        c.text(left - 2, 66, "q heads", size=11, anchor="start", colour=MUTED)
        for i, qx in enumerate(q_centres):
            c.rect(qx - cell / 2, 76, cell, cell, Q_FILL, stroke=PALETTE["attn"][1], radius=4)
            c.text(qx, 76 + cell / 2, str(i + 1), size=11, max_width=cell)
        kv_centres = [sum(q_centres[j * group : (j + 1) * group]) / group for j in range(h_kv)]
        for i, qx in enumerate(q_centres):
            c.line([(qx, 76 + cell), (kv_centres[i // group], 150)], colour=LINE, width=1.2, head=False)
        for j, kx in enumerate(kv_centres):
            c.rect(kx - cell / 2, 150, cell, cell, KV_FILL, stroke=PALETTE["data"][1], radius=4)
            c.text(kx, 150 + cell / 2, str(j + 1), size=11, max_width=cell)
        c.text(left - 2, 192, "key/value heads", size=11, anchor="start", colour=MUTED)
        # the cache per token: one key and one value per key/value head, drawn to scale
        c.text(left - 2, 220, "KV cache per token", size=11, anchor="start", colour=MUTED)
        c.rect(left, 232, row, 36, "none", stroke=MUTED, radius=3)
        unit = row / n_head
        for j in range(h_kv):
            c.rect(left + j * unit + 1, 233, unit - 2, 16, KV_FILL, radius=2)
            c.rect(left + j * unit + 1, 251, unit - 2, 16, "#f8dfb8", radius=2)
            c.text(left + (j + 0.5) * unit, 241, "k", size=11, max_width=unit)
            c.text(left + (j + 0.5) * unit, 259, "v", size=11, max_width=unit)
        share = "the full cache" if h_kv == n_head else f"1/{n_head // h_kv} of the multi-head cache"
        c.text(cx, 286, share, size=12, bold=True, colour=STREAM if h_kv != n_head else LINE, max_width=232)
    c.text(
        380,
        320,
        "the cache keeps keys and values only: 2 · n_layer · n_kv_head · head_dim numbers per token",
        size=12,
        colour=LINE,
    )
    g, more = n_head // n_kv_head, ", and so on" if n_kv_head > 2 else ""
    return c.finish(
        alt=(
            f"Three ways to pair {n_head} query heads with key/value heads. Multi-head attention, "
            f"as in GPT-2: each of the {n_head} query heads has its own key/value head. Grouped-query "
            f"attention: {n_kv_head} key/value heads, query heads 1 to {g} sharing the first, "
            f"{g + 1} to {2 * g} the second{more}. Multi-query attention: "
            f"all {n_head} query heads share one key/value head. Below each, the KV cache per token "
            f"drawn to scale, one key and one value per key/value head: the grouped-query cache is "
            f"1/{n_head // n_kv_head} of the multi-head one, the multi-query cache 1/{n_head}."
        ),
        caption=(
            "Grouped-query and multi-query attention: query heads in a group share one key/value "
            "head, so the KV cache shrinks by n_head / n_kv_head."
        ),
    )
