"""Training batches: seeded random samples of the training split, from memory or streamed from disk.

Every step's batch indices, noise and label dropout come from a generator seeded by (run seed, step, rank), so a run
resumed from step s draws exactly what an uninterrupted run would have drawn from step s + 1 on, whichever way the
images are loaded:
- small data sets (MedMNIST, the demo) are decoded once into memory (``decode_split``);
- large ones (CheXpert at 256 px is ~13 GB as float32) are streamed: a DataLoader with worker processes decodes each
  step's batch from the files (``streamed_batches``).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from meddiff.data import ImageDecoder, Manifest, ManifestDataset
from meddiff.progress import Progress


def decode_split(manifest: Manifest, decoder: ImageDecoder, label: str = "decoding") -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every row of ``manifest`` (errors raise: training never silently drops an image).

    Returns: images [N, C, H, W] float32 in [-1, 1], labels [N] int64.
    """
    n = len(manifest)
    images = torch.empty(n, decoder.channels, decoder.image_size, decoder.image_size)
    progress = Progress(n, label, unit="img", every_s=15.0)
    for i, row in enumerate(manifest.frame.to_dict("records")):
        images[i] = decoder.decode_row(row)
        progress.update(1)
    labels = torch.tensor(manifest.frame["label"].to_numpy(dtype="int64"))
    return images, labels


def step_generator(seed: int, step: int, rank: int = 0, device: torch.device | str = "cpu",
                   stream: int = 0) -> torch.Generator:
    """The generator of one (seed, step, rank); ``stream`` separates independent uses (batch indices vs noise) so
    they never share random bits."""
    from meddiff.diffusion.noise import draw_seed

    gen = torch.Generator(device=device)
    gen.manual_seed(draw_seed((int(seed) * 1_000_003 + int(rank) * 104_729 + int(stream) * 15_485_863) % (1 << 63),
                              int(step)))
    return gen


def sample_batch(n: int, batch_size: int, seed: int, step: int, rank: int = 0) -> torch.Tensor:
    """[batch_size] indices drawn uniformly with replacement, from the (seed, step, rank) stream on the CPU."""
    gen = step_generator(seed, step, rank, stream=1)
    return torch.randint(0, n, (batch_size,), generator=gen)


def bytes_needed(n: int, decoder: ImageDecoder) -> int:
    return n * decoder.channels * decoder.image_size**2 * 4


class _StepSampler(Sampler[list[int]]):
    """Yields the index batch of every step from ``start + 1`` to ``steps``."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, start: int, steps: int) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.start, self.steps = n, batch_size, seed, rank, start, steps

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start + 1, self.steps + 1):
            yield sample_batch(self.n, self.batch_size, self.seed, step, self.rank).tolist()

    def __len__(self) -> int:
        return self.steps - self.start


def memory_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, rank: int, start: int,
                   steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for step in range(start + 1, steps + 1):
        idx = sample_batch(images.shape[0], batch_size, seed, step, rank).to(images.device)
        yield images[idx], labels[idx]


def streamed_batches(manifest: Manifest, decoder: ImageDecoder, batch_size: int, seed: int, rank: int, start: int,
                     steps: int, num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    dataset = ManifestDataset(manifest, decoder)
    loader = DataLoader(
        dataset,
        batch_sampler=_StepSampler(len(dataset), batch_size, seed, rank, start, steps),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    for images, labels, _index in loader:
        yield images, labels


def training_batches(train_m: Manifest, decoder: ImageDecoder, tc, ctx, start: int,
                     device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (pixels [B, C, H, W], labels [B]) batch of every step after ``start``: in memory when the decoded split fits
    in ``train.preload_max_gb`` (moved to ``device`` once), else streamed from the files by DataLoader workers."""
    need = bytes_needed(len(train_m), decoder)
    if need <= tc.preload_max_gb * 2**30:
        images, labels = decode_split(train_m, decoder, label="[train] decoding")
        images, labels = images.to(device), labels.to(device)
        return memory_batches(images, labels, tc.batch_size, tc.seed, ctx.rank, start, tc.steps)
    if ctx.is_main:
        ctx.log(f"[train] {len(train_m)} images need {need / 2**30:.1f} GiB decoded (> train.preload_max_gb = "
                f"{tc.preload_max_gb}): streaming batches with {tc.num_workers} loader worker(s)")
    return streamed_batches(train_m, decoder, tc.batch_size, tc.seed, ctx.rank, start, tc.steps, tc.num_workers)
