"""jaxdistill: controllable LLM distillability, natively in JAX.

A teacher is calibrated after training by reinforcement fine-tuning whose reward mixes task utility,
a KL anchor to the original teacher and an across-tokenizer calibration reward measured against a
small proxy student. One knob, ``eta``, makes the teacher distillable (eta > 0) or undistillable
(eta < 0). See README.md for the tour.
"""

__version__ = "0.1.0"
