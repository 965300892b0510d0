"""The book's diagrams, drawn as SVG from code in one style (chapter 1 shows the first).

Each diagram is a function that returns a ``Diagram``: in a notebook it shows itself as
an inline SVG figure with alt text and a caption (``_repr_html_``), so the picture appears
in Jupyter, in a notebook opened alone in Colab and on the book's site alike; ``.svg``,
``.alt`` and ``.save(path)`` give the picture to anything else. A chapter draws one with a
single line in a cell tagged ``remove-input``::

    from llmbook import diagrams

    diagrams.gpt_block()

The primitives (boxes, arrows, grids, groups) live in ``llmbook.diagrams.canvas``; the
architecture pictures in ``models``, the processes in ``pipelines``, chapter 13's changes
to GPT-2 in ``modern``. Pure Python, no dependency: importing this package draws nothing.
"""

from llmbook.diagrams.canvas import Canvas, Diagram, text_width
from llmbook.diagrams.details import (
    heads_split_merge,
    induction_circuit,
    kv_cache,
    lstm_cell,
    masked_vs_causal,
    prompt_masking,
    skip_gram,
    window_model,
)
from llmbook.diagrams.models import (
    attention_qkv,
    autoencoder,
    classification_head,
    encoder_decoder,
    gpt_block,
    lora,
    rnn_unrolled,
)
from llmbook.diagrams.modern import grouped_query_attention, modern_block
from llmbook.diagrams.pipelines import (
    data_parallel,
    data_parallel_zero,
    llm_stages,
    preference_pipeline,
    tokens_to_embeddings,
    training_loop,
)

# every diagram of the book, in chapter order (the tests draw each one)
ALL = {
    "llm_stages": llm_stages,
    "autoencoder": autoencoder,
    "skip_gram": skip_gram,
    "tokens_to_embeddings": tokens_to_embeddings,
    "window_model": window_model,
    "rnn_unrolled": rnn_unrolled,
    "lstm_cell": lstm_cell,
    "attention_qkv": attention_qkv,
    "heads_split_merge": heads_split_merge,
    "encoder_decoder": encoder_decoder,
    "masked_vs_causal": masked_vs_causal,
    "gpt_block": gpt_block,
    "kv_cache": kv_cache,
    "training_loop": training_loop,
    "classification_head": classification_head,
    "prompt_masking": prompt_masking,
    "lora": lora,
    "induction_circuit": induction_circuit,
    "preference_pipeline": preference_pipeline,
    "data_parallel": data_parallel,
    "data_parallel_zero": data_parallel_zero,
    "modern_block": modern_block,
    "grouped_query_attention": grouped_query_attention,
}

__all__ = ["ALL", "Canvas", "Diagram", "text_width", *ALL]
