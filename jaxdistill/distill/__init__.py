"""Student objectives and the distillation trainer (sft, seqkd, kd, gkd); see docs/distill.md.

    from jaxdistill.distill import DistillConfig, distill
    run = distill(DistillConfig(student="runs/tiny/proxy", teacher="runs/tiny/teacher", objective="kd"))
"""

from jaxdistill.distill.data import OBJECTIVES
from jaxdistill.distill.trainer import DistillConfig, distill

__all__ = ["DistillConfig", "OBJECTIVES", "distill"]
