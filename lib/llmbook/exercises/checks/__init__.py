"""The checks of every chapter's exercises, one module per chapter (``chNN_slug``).

A module registers its chapter's checks with ``llmbook.exercises.core.register`` when it
is imported, and ``core.CHECK_MODULES`` maps each check name's concept (``"gpt"`` in
``"gpt.layer_norm"``) to its module, so a check imports its own chapter's module only.
The comparisons the modules share (tensors, numbers, known mistakes, in-place changes)
live in ``llmbook.exercises.compare``.
"""
