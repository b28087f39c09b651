"""Distillation of MotivNet and other teachers into small students, and their evaluation (needs torch;
the torch-free dataset readers are the runtime's: motivnet_edge.datasets)."""
