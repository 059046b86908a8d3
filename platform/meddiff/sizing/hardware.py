"""The GPUs a plan projects onto: memory, dense peak FLOP/s per precision, memory bandwidth.

Figures from the vendor datasheets (dense, i.e. without 2:4 structured sparsity, which halves the "with sparsity"
figures the datasheets print first), SXM form factor:
- A100 80 GB: NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 312 TFLOPS, TF32 156 TFLOPS, FP32 19.5 TFLOPS,
  HBM2e 2,039 GB/s. The paper's GPU ("an A100 GPU", 80 GB).
- H100 SXM5 80 GB: NVIDIA H100 Tensor Core GPU datasheet (2023): BF16 989 TFLOPS (1,979 with sparsity), TF32 494.5
  (989 with sparsity), FP32 67 TFLOPS, HBM3 3.35 TB/s.
- H200 SXM 141 GB: NVIDIA H200 Tensor Core GPU datasheet (2024): the H100's compute (BF16 989, TF32 494.5, FP32 67
  TFLOPS dense), HBM3e 141 GB at 4.8 TB/s.
Memory is what CUDA reports as the device's total (nvidia-smi: 81,920 MiB for the A100 80 GB, 81,559 MiB for the
H100 80 GB, 143,771 MiB for the H200): the plan keeps a margin of it free (``plan.MEMORY_MARGIN``).
"""

from __future__ import annotations

from dataclasses import dataclass

from meddiff.errors import ConfigError

TERA = 1e12
MIB = 2**20


@dataclass(frozen=True)
class GPU:
    """name; memory_bytes; peak dense FLOP/s in bf16 (tensor cores), tf32 (tensor cores) and fp32 (CUDA cores);
    bandwidth in bytes/s."""

    name: str
    memory_bytes: int
    bf16_flops: float
    tf32_flops: float
    fp32_flops: float
    bandwidth: float

    def peak_flops(self, precision: str) -> float:
        """Dense peak for a config's ``precision`` on this GPU: bf16 and auto (bf16 on CUDA, ``device.autocast_dtype``)
        -> the bf16 tensor-core peak; fp32 -> the TF32 tensor-core peak (PyTorch runs convolutions in TF32 on Ampere
        and later by default, ``torch.backends.cudnn.allow_tf32``; matmuls only with ``set_float32_matmul_precision``:
        an upper bound for fp32 transformers)."""
        return self.tf32_flops if precision == "fp32" else self.bf16_flops


GPUS: dict[str, GPU] = {
    "a100": GPU("A100 80 GB SXM", 81_920 * MIB, 312 * TERA, 156 * TERA, 19.5 * TERA, 2.039e12),
    "h100": GPU("H100 80 GB SXM", 81_559 * MIB, 989 * TERA, 494.5 * TERA, 67 * TERA, 3.35e12),
    "h200": GPU("H200 141 GB SXM", 143_771 * MIB, 989 * TERA, 494.5 * TERA, 67 * TERA, 4.8e12),
}


def get_gpu(name: str) -> GPU:
    if name not in GPUS:
        raise ConfigError(f"--gpu: unknown GPU {name!r}; known: {sorted(GPUS)}")
    return GPUS[name]
