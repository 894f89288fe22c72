"""Who runs where: the teacher (with LoRA), its reference (the same weights, adapters off) and the
frozen proxy, all on one device mesh, each with its tokenizer.

There is one copy of the teacher's weights: the policy is ``teacher(..., lora=True)`` and the
reference is ``teacher(..., lora=False)``. The proxy is loaded once; it is updated only when calibration
gives it a learning rate (``jaxdistill.rl.proxy``).
"""

from __future__ import annotations

import dataclasses

from jax.sharding import Mesh

from jaxdistill.generation.tokenized_model import TokenizedModel
from jaxdistill.models import LoraConfig, QwenConfig
from jaxdistill.sharding import MeshConfig, make_mesh


@dataclasses.dataclass
class Cluster:
    mesh: Mesh
    teacher_lm: TokenizedModel  # the policy (adapters on) and its reference (adapters off)
    teacher_config: QwenConfig
    proxy_lm: TokenizedModel
    proxy_config: QwenConfig

    @classmethod
    def load(cls, teacher: str, proxy: str, *, lora: LoraConfig, mesh: MeshConfig, dtype: str = "float32",
             teacher_tokenizer: str | None = None, proxy_tokenizer: str | None = None, seed: int = 0) -> "Cluster":
        device_mesh = make_mesh(mesh)
        teacher_lm, teacher_config = TokenizedModel.load(teacher, teacher_tokenizer, role="teacher", dtype=dtype,
                                                         mesh=device_mesh, lora=lora, seed=seed)
        proxy_lm, proxy_config = TokenizedModel.load(proxy, proxy_tokenizer, role="proxy", dtype=dtype,
                                                     mesh=device_mesh)
        return cls(device_mesh, teacher_lm, teacher_config, proxy_lm, proxy_config)

    # the names the loop reads
    teacher = property(lambda self: self.teacher_lm.model)
    teacher_tokenizer = property(lambda self: self.teacher_lm.tokenizer)
    proxy = property(lambda self: self.proxy_lm.model)
    proxy_tokenizer = property(lambda self: self.proxy_lm.tokenizer)
