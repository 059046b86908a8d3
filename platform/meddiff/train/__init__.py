"""Training: the diffusion loop, checkpoint bundles (safetensors + metadata.json) and their loading."""
