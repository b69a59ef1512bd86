"""Training stages: connector pretraining, caption fine-tuning, DeepLens refinement."""
