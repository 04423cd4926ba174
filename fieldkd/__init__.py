"""fieldkd: knowledge distillation of neural fields on Ray."""

__version__ = "0.1.0"
