"""Distillation of MotivNet and other teachers into small ViT students (needs torch)."""
