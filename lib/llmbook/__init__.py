"""llmbook: the small GPT library that the course "LLMs from the Ground Up" builds chapter by chapter.

Every chapter first builds an idea from scratch in its notebook, checks it against the
version here, and from then on imports it. Importing this package has no side effects:
no printing, no downloads, no device probing.
"""

from llmbook.config import PRESETS, GPTConfig, count_parameters
from llmbook.model import GPT

__all__ = ["GPT", "PRESETS", "GPTConfig", "count_parameters"]
__version__ = "0.1.0"
