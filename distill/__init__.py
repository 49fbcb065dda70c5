"""The distill stage: knowledge distillation from a teacher artifact into a smaller student."""
