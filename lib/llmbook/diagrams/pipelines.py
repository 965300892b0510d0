"""Diagrams of processes: how text becomes vectors, how a model is trained and tuned.

``tokens_to_embeddings`` and ``training_loop`` compute what they show (GPT-2's tokens of a
sentence, the bytes of a text), so the picture stays true to the book's tokenizers.
"""

from __future__ import annotations

import zlib

from llmbook.diagrams.canvas import LINE, MUTED, PALETTE, Canvas, Diagram, text_width

STREAM = PALETTE["stream"][1]


def _visible(piece: str) -> str:
    """A token as a picture shows it: a space as ␣, a newline as ↵."""
    return piece.replace(" ", "␣").replace("\n", "↵")


def llm_stages() -> Diagram:
    """Chapter 1: data → tokenizer → pretraining → fine-tuning → preference tuning → use."""
    c = Canvas("llm_stages", 760, 210)
    stages = [
        ("text data", "books, web\npages, code", "data"),
        ("tokenizer", "text → token\nids", "layer"),
        ("pretraining", "predict the\nnext token", "layer"),
        ("fine-tuning", "examples of\nthe task", "attn"),
        ("preferences", "which answer\nis better?", "attn"),
        ("use", "prompt in,\ntext out", "data"),
    ]
    w, gap, y, h = 108, 14, 70, 110
    boxes = []
    for i, (title, text, kind) in enumerate(stages):
        x = 20 + i * (w + gap)
        boxes.append(c.box(x, y, w, h, kind=kind))
        c.text(x + w / 2, y + 26, title, size=13, bold=True, max_width=w - 8)
        c.text(x + w / 2, y + 72, text, size=12, max_width=w - 8)
        if i:
            c.arrow(x - gap, y + h / 2, x, y + h / 2)
    c.group(boxes[1].x - 5, 30, 2 * w + gap + 10, 165, "base model, ch. 3–8", size=12)
    c.group(boxes[3].x - 5, 30, 2 * w + gap + 10, 165, "assistant, ch. 9–11", size=12)
    return c.finish(
        alt=(
            "The stages of building a large language model, left to right: text data, a "
            "tokenizer that turns text into token ids, pretraining to predict the next token "
            "(which gives a base model, chapters 3 to 8), fine-tuning on examples of a task and "
            "tuning on preferences between answers (which give an assistant, chapters 9 to 11), "
            "and finally use: prompt in, text out."
        ),
        caption=(
            "How an LLM is built: almost all the compute goes into pretraining; fine-tuning and "
            "preference tuning then shape the base model with far less data."
        ),
    )


def training_loop(text: str = "The cat sat on the mat.", context: int = 8) -> Diagram:
    """Chapter 8: inputs and next-token targets (the text's bytes, shifted by one), and the loop."""
    ids = list(text.encode("utf-8"))
    if not 2 <= context <= 9 or len(ids) < context + 1:
        raise ValueError(f"need 2 <= context <= 9 and a text of more than {context} bytes")
    c = Canvas("training_loop", 760, 430)
    x_row, y_row = ids[:context], ids[1 : context + 1]
    cw = 46
    x0 = 130
    for t in range(context):
        c.text(x0 + t * cw + cw / 2, 22, str(t), size=11, colour=MUTED)
        for row, (ys, kind) in enumerate([(x_row, "layer"), (y_row, "stream")]):
            b = c.box(
                x0 + t * cw + 2,
                36 + row * 84,
                cw - 4,
                40,
                _visible(chr(ys[t])),
                kind=kind,
                size=16,
                mono=True,
                radius=5,
            )
        c.arrow(b.cx, 76, b.cx, 120)
    c.text(x0 - 12, 56, "input x", size=13, anchor="end")
    c.text(x0 - 12, 140, "target y", size=13, anchor="end")
    c.text(
        x0 + context * cw + 16,
        98,
        "y is x moved one\nto the left: position t\npredicts byte t + 1",
        size=12,
        anchor="start",
        colour=LINE,
    )
    y = 220
    batch = c.box(20, y, 130, 56, "a batch of\nwindows (x, y)", kind="data", size=13)
    model = c.box(190, y, 120, 56, "model(x)", size=14)
    logits = c.box(350, y, 110, 56, "logits", kind="data", size=14)
    loss = c.box(500, y, 240, 56, "loss: cross-entropy\nof the logits against y", kind="stream", size=13)
    back = c.box(500, y + 120, 240, 56, "loss.backward():\na gradient for every weight", kind="stream", size=13)
    step = c.box(190, y + 120, 220, 56, "optimizer.step(): move\nthe weights a little (AdamW)", size=13)
    for a, b in [(batch, model), (model, logits), (logits, loss)]:
        c.arrow(a.right, a.cy, b.x, b.cy)
    c.arrow(loss.cx, loss.bottom, back.cx, back.y)
    c.arrow(back.x, back.cy, step.right, step.cy)
    c.arrow(step.cx - 50, step.y, model.cx, model.bottom)
    c.line([(step.x, step.cy), (batch.cx, step.cy), (batch.cx, batch.bottom)], dashed=True)
    c.text(batch.cx + 8, step.cy + 24, "next batch", size=12, anchor="start", colour=MUTED)
    return c.finish(
        alt=(
            f"Next-token targets and the training loop. The first {context} bytes of "
            f"{text!r} are the input x; the target y is the same text moved one byte to the left, "
            "so position t must predict byte t plus 1. A batch of windows goes through the model "
            "to logits; cross-entropy against y gives the loss; loss.backward computes the "
            "gradients; optimizer.step updates the weights; then the next batch."
        ),
        caption=(
            "Labels for free: the target is the input moved one token on. Training repeats "
            "forward, loss, backward and step, batch after batch."
        ),
    )


def tokens_to_embeddings(text: str = "The teacher taught the students.") -> Diagram:
    """Chapter 3: text → GPT-2 tokens → ids → vectors, tokenised here by GPT-2's tokenizer."""
    from llmbook.tokenizers import gpt2_tokenizer

    enc = gpt2_tokenizer()
    ids = enc.encode(text)
    pieces = [_visible(enc.decode([i])) for i in ids]
    widths = [
        max(58.0, text_width(p, 14, mono=True) + 18, text_width(str(i), 13, mono=True) + 18)
        for p, i in zip(pieces, ids, strict=True)
    ]
    left, gap = 130, 10
    if left + sum(widths) + gap * (len(ids) - 1) > 740:
        raise ValueError(f"{text!r} has too many tokens ({len(ids)}) to draw; use a shorter sentence")
    c = Canvas("tokens_to_embeddings", 760, 400)
    full = c.box(left, 20, sum(widths) + gap * (len(ids) - 1), 40, repr(text)[1:-1], kind="data")
    rows = [("text", 40), ("tokens", 120), ("ids", 200), ("vectors:\nwte[id]\n+ wpe[t]", 300)]
    for label, y in rows:
        c.text(left - 14, y, label, size=13, anchor="end", bold=label != rows[-1][0])
    x = float(left)
    for t, (piece, i, w) in enumerate(zip(pieces, ids, widths, strict=True)):
        cx = x + w / 2
        c.arrow(cx, full.bottom, cx, 100)
        tok = c.box(x, 100, w, 40, piece, kind="data", mono=True)
        c.arrow(cx, tok.bottom, cx, 180)
        num = c.box(x, 180, w, 40, str(i), kind="plain", mono=True, size=13)
        c.arrow(cx, num.bottom, cx, 252)
        seed = zlib.crc32(f"{i}:{t}".encode())
        shades = ["#c9d9f0", "#9fbbe3", "#6f97d2", "#3a6db5"]
        cells = [[(shades[(seed >> (2 * r)) % 4], "")] for r in range(6)]
        c.grid(cx - 8, 252, cells, cell=16)
        c.text(cx, 366, f"t = {t}", size=11, colour=MUTED)
        x += w + gap
    return c.finish(
        alt=(
            f"The sentence {text!r} split by GPT-2's tokenizer into {len(ids)} tokens, "
            f"{', '.join(repr(enc.decode([i])) for i in ids)}, with ids {', '.join(map(str, ids))}; "
            "each id selects a row of the token embedding wte, and the row of its position in wpe "
            "is added, giving one vector per token."
        ),
        caption=(
            "From text to vectors, with GPT-2's tokenizer (␣ is a space). The shades stand for "
            "the numbers of each vector: a row of wte plus the row of wpe for the position."
        ),
    )


def preference_pipeline() -> Diagram:
    """Chapter 11: pretrained → SFT, then RLHF (reward model + PPO), DPO, or GRPO."""
    c = Canvas("preference_pipeline", 760, 390)
    pre = c.box(20, 160, 110, 60, "pretrained\nmodel", size=13)
    sft = c.box(160, 160, 140, 60, "1. SFT: tuned\non instructions", kind="attn", size=13)
    c.arrow(pre.right, pre.cy, sft.x, sft.cy)
    c.group(340, 8, 410, 122, "RLHF (Christiano et al., 2017; Ouyang et al., 2022)", size=12)
    rm = c.box(356, 44, 170, 70, "2. reward model\nr(x, y), trained on\nranked answers", kind="stream", size=12)
    ppo = c.box(564, 44, 170, 70, "3. PPO: more reward,\n− β·KL to the\nSFT model", kind="stream", size=12)
    c.arrow(rm.right, rm.cy, ppo.x, ppo.cy)
    dpo = c.box(
        356,
        160,
        378,
        60,
        "DPO: one loss on pairs, chosen ≻ rejected;\nno reward model, no sampling",
        kind="layer",
        size=13,
    )
    c.text(734, 234, "Rafailov et al., 2023", size=11, anchor="end", colour=MUTED, italic=True)
    grpo = c.box(
        356,
        270,
        378,
        80,
        "GRPO: sample a group of answers per prompt;\nreward = a program's check; "
        "push up the\nbetter-than-average answers (− β·KL)",
        kind="norm",
        size=12,
    )
    c.text(734, 366, "Shao et al., 2024", size=11, anchor="end", colour=MUTED, italic=True)
    c.line([(sft.right, sft.cy - 12), (322, sft.cy - 12), (322, rm.cy), (rm.x, rm.cy)])
    c.arrow(sft.right, dpo.cy, dpo.x, dpo.cy)
    c.line([(sft.right, sft.cy + 12), (322, sft.cy + 12), (322, grpo.cy), (grpo.x, grpo.cy)])
    return c.finish(
        alt=(
            "From a pretrained model to a better assistant. The pretrained model is first tuned on "
            "instructions (SFT). From the SFT model three routes lead on: RLHF trains a reward "
            "model on answers ranked by people, then tunes the policy with PPO to earn more reward "
            "minus a KL penalty to the SFT model; DPO trains on chosen and rejected pairs directly, "
            "without a reward model or sampling; GRPO samples a group of answers per prompt, "
            "rewards them with a program's check and pushes up the better-than-average ones."
        ),
        caption=(
            "Learning from preferences and rewards: RLHF's three steps, DPO's shortcut, and "
            "reinforcement learning with a reward a program can check (GRPO)."
        ),
    )


def _check_gpus(n_gpus: int) -> None:
    if not 2 <= n_gpus <= 4:
        raise ValueError(f"n_gpus must be 2, 3 or 4 to fit the picture, got {n_gpus}")


def _split_and_reduce(c: Canvas, n_gpus: int, x0: float, col: float, reduce_text: str) -> None:
    """The data-parallel row: batch slices → one model copy per GPU → one all-reduce."""
    c.text(20, 38, "one batch", size=13, anchor="start", bold=True)
    c.text(20, 110, "data parallel:\na full copy of\nthe model on\nevery GPU", size=12, anchor="start", colour=LINE)
    ranks = []
    for k in range(n_gpus):
        x = x0 + k * col
        part = c.box(x + 10, 20, col - 20, 36, f"slice {k}", kind="data", size=13)
        rank = c.box(x + 10, 84, col - 20, 56, f"GPU {k}: model\n→ gradient g{k}", size=13)
        c.arrow(part.cx, part.bottom, rank.cx, rank.y)
        ranks.append(rank)
    reduce = c.box(x0 + 10, 172, n_gpus * col - 20, 40, reduce_text, kind="stream", size=13)
    for rank in ranks:
        c.arrow(rank.cx, rank.bottom, rank.cx, reduce.y)


def data_parallel(n_gpus: int = 2) -> Diagram:
    """Chapter 12: data parallelism alone (split the batch, all-reduce the gradients, same step)."""
    _check_gpus(n_gpus)
    c = Canvas("data_parallel", 760, 270)
    mean = " + ".join(f"g{k}" for k in range(n_gpus))
    _split_and_reduce(c, n_gpus, 180, 560 / n_gpus, f"all-reduce: every GPU receives ({mean}) / {n_gpus}")
    c.text(470, 246, "the same gradient, the same update → the copies stay identical", size=13, colour=MUTED)
    return c.finish(
        alt=(
            f"Data parallelism on {n_gpus} GPUs: one batch is split into {n_gpus} slices; each GPU "
            "runs its own full copy of the model on its slice and computes a gradient; an "
            "all-reduce gives every GPU the mean of the gradients, so every copy takes the same "
            "step and the copies stay identical."
        ),
        caption=(
            "Data parallelism: each GPU (a rank) computes the gradient of its slice of the batch; "
            "the all-reduce averages them, so every copy makes the same update."
        ),
    )


def data_parallel_zero(n_gpus: int = 4) -> Diagram:
    """Chapter 12: data parallelism (split the batch, all-reduce the gradients) and ZeRO's shards."""
    _check_gpus(n_gpus)
    from llmbook.scaling import ZERO_STAGES

    c = Canvas("data_parallel_zero", 760, 500)
    col, x0 = 560 / n_gpus, 180
    _split_and_reduce(c, n_gpus, x0, col, "all-reduce: every GPU receives the mean gradient, makes the same step")
    c.text(20, 250, f"What each GPU keeps ({n_gpus} GPUs)", size=14, anchor="start", bold=True)
    parts = [("weights", PALETTE["layer"][1]), ("gradients", STREAM), ("optimizer states", PALETTE["data"][1])]
    lx = 330.0
    for name, colour in parts:
        c.rect(lx, 244, 12, 12, colour)
        c.text(lx + 18, 250, name, size=12, anchor="start")
        lx += 38 + text_width(name, 12)
    short = {0: "DDP", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3 / FSDP"}
    for stage in sorted(ZERO_STAGES):
        y = 276 + stage * 54
        c.text(20, y + 18, short[stage], size=13, anchor="start", bold=True)
        sharded = ["optimizer states", "gradients", "weights"][:stage]
        for k in range(n_gpus):
            x = x0 + k * col + 10
            bw = col - 20
            for p, (name, colour) in enumerate(parts):
                by = y + p * 13
                if name in sharded:
                    c.rect(x, by, bw, 10, "#eef0f2")
                    c.rect(x + k * bw / n_gpus, by, bw / n_gpus, 10, colour)
                else:
                    c.rect(x, by, bw, 10, colour)
    c.text(390, 492, "coloured: what a GPU stores; grey: the shards that the other GPUs hold", size=11, colour=MUTED)
    return c.finish(
        alt=(
            f"Data parallelism on {n_gpus} GPUs: the batch is split into {n_gpus} slices, each GPU "
            "runs a full copy of the model on its slice and computes a gradient, and an all-reduce "
            "gives every GPU the mean gradient so all take the same step. Below, what each GPU "
            "stores: with plain DDP every GPU keeps all weights, gradients and optimizer states; "
            "ZeRO-1 splits the optimizer states across GPUs, ZeRO-2 also the gradients, and ZeRO-3 "
            "(FSDP) also the weights."
        ),
        caption=(
            "Data parallelism and ZeRO (Rajbhandari et al., 2020): split the batch, average the "
            "gradients; then stop storing the same model states on every GPU."
        ),
    )
