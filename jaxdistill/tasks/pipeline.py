"""grain input pipelines: token batches of task examples for SFT (prompt + solution) or for
generation (prompt only), padded to length buckets, resumable exactly.

    ds = make_pipeline(task, examples, tokenizer, mode="sft", batch_size=32, seed=0)
    it = iter(ds)
    batch = next(it)               # dict of numpy arrays, see below
    state = it.get_state()         # a small JSON-able dict: save it with the checkpoint
    it = iter(ds); it.set_state(state)   # ... and the next batches are the same as without a stop

Order of operations (``grain.MapDataset``): example indices -> seeded global shuffle (reshuffled
each epoch) -> repeat (``num_epochs=None``: forever) -> tokenize -> batch, each batch padded to
the smallest bucket length that holds its longest row. Bucketing keeps the number of distinct
shapes (and so of jit compilations) small.

Batch arrays (int32, shape [batch, length] unless noted):
- ``input_ids``: token ids, padded with ``pad_id``;
- ``attention_mask``: 1 on real tokens, 0 on padding;
- ``positions``: position of each real token within its row (0 on padding), right for left padding;
- ``loss_mask`` (sft only): 1 on the tokens to be predicted, i.e. the solution and its eos.
  A trainer scores ``logits[:, :-1]`` against ``input_ids[:, 1:]`` weighted by ``loss_mask[:, 1:]``;
- ``lengths`` [batch]: real tokens per row (prompt + solution in sft, prompt in prompt mode);
- ``index`` [batch]: the row's position in ``examples`` (to fetch the Example for a verifier).

Sequences longer than the largest bucket are truncated (prompt mode keeps the end of the prompt,
sft mode keeps the start) and a warning says so once.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxdistill.tasks.base import Example, Task

DEFAULT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048)
MODES = ("sft", "prompt")


# ---- tokenizer adapters ----------------------------------------------------------------------
def text_encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    """A function text -> token ids (no special tokens added) for an HF ``tokenizers.Tokenizer``,
    a ``transformers`` tokenizer, anything with ``encode(text) -> list[int]``, or a callable."""
    module = type(tokenizer).__module__
    if module.startswith("tokenizers"):
        return lambda text: tokenizer.encode(text, add_special_tokens=False).ids
    if hasattr(tokenizer, "encode"):
        try:
            tokenizer.encode("a", add_special_tokens=False)
            return lambda text: list(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return lambda text: list(tokenizer.encode(text))
    if callable(tokenizer):
        return lambda text: list(tokenizer(text))
    raise TypeError(f"cannot encode text with {type(tokenizer).__name__}: pass a tokenizers."
                    f"Tokenizer, a transformers tokenizer or a callable text -> ids")


def token_id(tokenizer: Any, token: str) -> int | None:
    """The id of ``token`` in ``tokenizer`` or None when it has no such token."""
    for method in ("token_to_id", "convert_tokens_to_ids"):
        lookup = getattr(tokenizer, method, None)
        if lookup is not None:
            value = lookup(token)
            unk = getattr(tokenizer, "unk_token_id", None)
            if isinstance(value, int) and value >= 0 and (value != unk or token == "<unk>"):
                return value
    return None


def _first_id(tokenizer: Any, attribute: str, tokens: Sequence[str]) -> int | None:
    value = getattr(tokenizer, attribute, None)
    if isinstance(value, int):
        return value
    for token in tokens:
        found = token_id(tokenizer, token)
        if found is not None:
            return found
    return None


def resolve_special_ids(tokenizer: Any, pad_id: int | None, eos_id: int | None, chat: bool
                        ) -> tuple[int, int]:
    """(pad_id, eos_id): the given ones, else found in the tokenizer. In chat mode the
    completion ends with ``<|im_end|>`` when the tokenizer has it."""
    if pad_id is None:
        pad_id = _first_id(tokenizer, "pad_token_id", ("<|pad|>", "<pad>", "<|endoftext|>"))
    if eos_id is None:
        chat_end = token_id(tokenizer, "<|im_end|>") if chat else None
        eos_id = chat_end if chat_end is not None else _first_id(
            tokenizer, "eos_token_id", ("<|endoftext|>", "</s>", "<eos>"))
    if pad_id is None or eos_id is None:
        raise ValueError(f"could not find the pad and eos ids of {type(tokenizer).__name__} "
                         f"(got pad={pad_id}, eos={eos_id}). Fix: pass pad_id= and eos_id=.")
    return pad_id, eos_id


def render_chatml(messages: Sequence[dict[str, str]]) -> str:
    """ChatML text with an open assistant turn (used when the tokenizer has no chat template)."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def prompt_text(task: Task, example: Example, tokenizer: Any, chat: bool) -> str:
    """The text the model is conditioned on: plain, or the tokenizer's chat template."""
    if not chat:
        return task.format_prompt(example)
    messages = task.chat_messages(example)
    if getattr(tokenizer, "chat_template", None) and hasattr(tokenizer, "apply_chat_template"):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return render_chatml(messages)


# ---- rows and batches --------------------------------------------------------------------------
class _WarnOnce:
    def __init__(self, message: str):
        self.message, self.done, self.lock = message, False, threading.Lock()

    def __call__(self):
        with self.lock:
            if not self.done:
                self.done = True
                warnings.warn(self.message, stacklevel=2)


def encode_row(prompt_ids: list[int], solution_ids: list[int] | None, eos_id: int,
               max_length: int) -> tuple[list[int], int, bool]:
    """(ids, number of prompt tokens, truncated?) of one row; ``solution_ids`` None = prompt only.

    Prompt-only rows keep the *end* of an overlong prompt; sft rows keep the start."""
    if solution_ids is None:
        return prompt_ids[-max_length:], min(len(prompt_ids), max_length), \
            len(prompt_ids) > max_length
    ids = prompt_ids + solution_ids + [eos_id]
    return ids[:max_length], min(len(prompt_ids), max_length), len(ids) > max_length


def bucket_length(longest: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``longest`` tokens."""
    for bucket in buckets:
        if longest <= bucket:
            return bucket
    raise ValueError(f"a row of {longest} tokens exceeds the largest bucket {buckets[-1]}")


def collate(rows: Sequence[dict[str, Any]], *, pad_id: int, buckets: Sequence[int],
            padding_side: str, with_loss_mask: bool) -> dict[str, np.ndarray]:
    """Pad rows ({"ids", "n_prompt", "index"}) into one batch; see the module docstring."""
    length = bucket_length(max(len(row["ids"]) for row in rows), buckets)
    shape = (len(rows), length)
    input_ids = np.full(shape, pad_id, dtype=np.int32)
    attention_mask = np.zeros(shape, dtype=np.int32)
    positions = np.zeros(shape, dtype=np.int32)
    loss_mask = np.zeros(shape, dtype=np.int32)
    for r, row in enumerate(rows):
        n = len(row["ids"])
        start = length - n if padding_side == "left" else 0
        input_ids[r, start:start + n] = row["ids"]
        attention_mask[r, start:start + n] = 1
        positions[r, start:start + n] = np.arange(n)
        loss_mask[r, start + row["n_prompt"]:start + n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "positions": positions,
             "lengths": np.array([len(row["ids"]) for row in rows], dtype=np.int32),
             "index": np.array([row["index"] for row in rows], dtype=np.int32)}
    if with_loss_mask:
        batch["loss_mask"] = loss_mask
    return batch


def make_pipeline(task: Task, examples: Sequence[Example], tokenizer: Any, *, mode: str = "sft",
                  batch_size: int = 8, seed: int = 0, shuffle: bool = True,
                  num_epochs: int | None = None, padding_side: str | None = None,
                  buckets: Sequence[int] = DEFAULT_BUCKETS, chat: bool = False,
                  pad_id: int | None = None, eos_id: int | None = None,
                  resample_solutions: bool = False, drop_remainder: bool = True,
                  num_threads: int = 0):
    """A ``grain.IterDataset`` of padded token batches of ``examples``; see the module docstring.

    mode: "sft" (prompt + solution + eos, with ``loss_mask``) or "prompt" (prompt only, for
    generation). padding_side: "right" or "left"; default right for sft, left for prompt.
    resample_solutions: draw a new solution each time an example is read, via
    ``task.sample_solution(example, rng)`` (arith: a random style), seeded and resumable.
    num_threads: grain prefetch threads (0 = read in the calling thread; the rows are in memory).
    """
    import grain

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    padding_side = padding_side or ("right" if mode == "sft" else "left")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not examples:
        raise ValueError(f"{task.name}: no examples to build a pipeline from")
    if mode == "sft" and not resample_solutions and not all(e.solution for e in examples):
        raise ValueError(f"{task.name}: some examples have no solution, so there is nothing to "
                         f"train on in sft mode. Fix: mode='prompt', or a task with solutions.")
    buckets = tuple(sorted(buckets))
    pad_id, eos_id = resolve_special_ids(tokenizer, pad_id, eos_id, chat)
    encode = text_encoder(tokenizer)
    warn_truncated = _WarnOnce(f"{task.name}: some rows exceed the largest bucket "
                               f"({buckets[-1]} tokens) and are truncated")
    examples = list(examples)

    def to_row(index: int, solution: str | None) -> dict[str, Any]:
        example = examples[index]
        prompt_ids = encode(prompt_text(task, example, tokenizer, chat))
        solution_ids = encode(solution) if solution is not None else None
        ids, n_prompt, truncated = encode_row(prompt_ids, solution_ids, eos_id, buckets[-1])
        if truncated:
            warn_truncated()
        return {"ids": ids, "n_prompt": n_prompt, "index": index}

    ds = grain.MapDataset.range(len(examples))
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if mode == "prompt":
        ds = ds.map(lambda index: to_row(index, None))
    elif resample_solutions:
        ds = ds.random_map(
            lambda index, rng: to_row(index, task.sample_solution(examples[index], rng)),
            seed=seed + 1)
    else:
        ds = ds.map(lambda index: to_row(index, examples[index].solution))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                  batch_fn=lambda rows: collate(rows, pad_id=pad_id, buckets=buckets,
                                                padding_side=padding_side,
                                                with_loss_mask=mode == "sft"))
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                prefetch_buffer_size=4 * num_threads))
