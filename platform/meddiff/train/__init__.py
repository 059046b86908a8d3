"""Training: the diffusion loop (loop.py) and the discriminative baseline loop (baseline_loop.py) over one context
interface (context.py: this process or a Ray Train worker, ray_trainer.py), seeded batches, augmentation, and checkpoint
bundles (safetensors + metadata.json)."""
