"""Who runs where: the teacher (with LoRA), its reference (the same weights, adapters off) and the
frozen proxy, all on one device mesh, with their tokenizers.

There is one copy of the teacher's weights: the policy is ``teacher(..., lora=True)`` and the
reference is ``teacher(..., lora=False)``. The proxy is loaded once; it is updated only when calibration
gives it a learning rate (``jaxdistill.rl.proxy``).
"""

from __future__ import annotations

import dataclasses

from jax.sharding import Mesh

from jaxdistill.models import LoraConfig, Qwen, QwenConfig, load_model
from jaxdistill.sharding import MeshConfig, make_mesh
from jaxdistill.tokenizer import Tokenizer, load_tokenizer


@dataclasses.dataclass
class Cluster:
    mesh: Mesh
    teacher: Qwen
    teacher_config: QwenConfig
    teacher_tokenizer: Tokenizer
    proxy: Qwen
    proxy_config: QwenConfig
    proxy_tokenizer: Tokenizer

    @classmethod
    def load(cls, teacher: str, proxy: str, *, lora: LoraConfig, mesh: MeshConfig, dtype: str = "float32",
             teacher_tokenizer: str | None = None, proxy_tokenizer: str | None = None, seed: int = 0) -> "Cluster":
        device_mesh = make_mesh(mesh)
        teacher_model, teacher_config = load_model(teacher, dtype=dtype, mesh=device_mesh, lora=lora, seed=seed)
        proxy_model, proxy_config = load_model(proxy, dtype=dtype, mesh=device_mesh)
        t_tok = load_tokenizer(teacher_tokenizer or teacher)
        p_tok = load_tokenizer(proxy_tokenizer or proxy)
        for name, tok, cfg in (("teacher", t_tok, teacher_config), ("proxy", p_tok, proxy_config)):
            if tok.vocab_size > cfg.vocab_size:
                raise ValueError(f"{name} tokenizer has {tok.vocab_size} tokens but the {name} model only "
                                 f"{cfg.vocab_size} embedding rows: the tokenizer does not belong to this model "
                                 f"(check {name}_tokenizer)")
            if tok.eos_id is None:
                raise ValueError(f"{name} tokenizer at {tok.path} has no eos token; set eos_token in its "
                                 "tokenizer_config.json")
        return cls(device_mesh, teacher_model, teacher_config, t_tok, proxy_model, proxy_config, p_tok)
