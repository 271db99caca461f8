"""The HTTP edge and composition root of the distillation gateway."""
