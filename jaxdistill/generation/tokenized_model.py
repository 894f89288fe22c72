"""A model with its tokenizer: the unit that samples completions, is scored on them and reads its own text.

Calibration holds two (the teacher and the proxy, ``jaxdistill.rl.cluster``), diagnosis two (the teacher and
the student), evaluation one at a time, distillation one per side (``jaxdistill.distill.data.Side``). :meth:`TokenizedModel.load` is the one place that loads the pair
and checks that they belong together.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from jax.sharding import Mesh

from jaxdistill.models import LoraConfig, Qwen, QwenConfig, load_model
from jaxdistill.tasks.base import Example, Task
from jaxdistill.tasks.pipeline import prompt_text, token_id
from jaxdistill.token_maths import padding_id
from jaxdistill.tokenizer import Tokenizer, load_tokenizer


@dataclasses.dataclass
class TokenizedModel:
    """A model, its tokenizer, the id that pads and the id that ends a completion, and how prompts are
    rendered (plain, or with the tokenizer's chat template when ``chat``). ``model`` is None where only the
    text side is needed (distillation encodes gold solutions with the student's tokenizer)."""

    tokenizer: Tokenizer
    pad_id: int
    eos_id: int
    chat: bool = False
    model: Qwen | None = None

    @classmethod
    def of(cls, tokenizer: Tokenizer, chat: bool = False, model: Qwen | None = None) -> "TokenizedModel":
        """Ids as the tokenizer declares them: pad = :func:`~jaxdistill.token_maths.padding_id`; a completion
        ends on ``<|im_end|>`` in chat mode when the tokenizer has it (a chat turn ends there), else on eos."""
        chat_end = token_id(tokenizer.hf, "<|im_end|>") if chat else None
        eos = chat_end if chat_end is not None else tokenizer.eos_id
        if eos is None:
            raise ValueError(f"tokenizer at {tokenizer.path} has no eos token; set eos_token in its "
                             "tokenizer_config.json")
        return cls(tokenizer, padding_id(tokenizer), eos, chat, model)

    @classmethod
    def load(cls, path: str | Path, tokenizer_path: str | Path | None = None, *, role: str = "model",
             dtype: str = "float32", mesh: Mesh | None = None, lora: LoraConfig | None = None, seed: int = 0,
             chat: bool = False) -> tuple["TokenizedModel", QwenConfig]:
        """Loads an HF folder and its tokenizer (``tokenizer_path``, else the same folder) and checks they
        belong together; ``role`` names the pair in errors (``teacher`` -> ``set teacher_tokenizer``)."""
        model, config = load_model(path, dtype=dtype, mesh=mesh, lora=lora, seed=seed)
        tokenizer = load_tokenizer(tokenizer_path or path)
        check_pair(config, tokenizer, role)
        return cls.of(tokenizer, chat, model), config

    @property
    def vocab_size(self) -> int:
        """Real tokens of the tokenizer (the embedding may have more rows; those are never sampled)."""
        return self.tokenizer.vocab_size

    def prompt(self, task: Task, example: Example) -> list[int]:
        """The prompt's token ids as this model reads it."""
        return self.tokenizer.encode(prompt_text(task, example, self.tokenizer.hf, self.chat))

    def text(self, ids: Sequence[int]) -> str:
        """Completion ids -> the text a verifier reads (special tokens, EOS included, dropped)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def check_pair(config: QwenConfig, tokenizer: Tokenizer, role: str = "model") -> None:
    """Raises ValueError when ``tokenizer`` cannot belong to a model of ``config`` or has no eos token."""
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"the {role} tokenizer ({tokenizer.path}) has {tokenizer.vocab_size} tokens but the {role} "
                         f"model only {config.vocab_size} embedding rows: the tokenizer does not belong to this "
                         f"model (set {role}_tokenizer to the right folder)")
    if tokenizer.eos_id is None:
        raise ValueError(f"the {role} tokenizer at {tokenizer.path} has no eos token; set eos_token in its "
                         "tokenizer_config.json")
