"""``meddiff bench --data-path``: how many images per second one CPU core turns from files into the denoiser's input at
256 px, per file format, and so how many cores per GPU keep the GPU fed.

Every input, in training and in scoring, goes through one decoder (``data/decode.py``; DICOM in ``data/dicom.py``):
training decodes rows with ``ImageDecoder.decode_row`` (``data/dataset.py``, ``train/batches.py``: into memory, or in
DataLoader workers when streamed), scoring with ``decode_batch_noted`` in each Ray Data actor
(``methods/predictor.py`` inside ``scoring/shards.score_shard``, run by ``scoring/ray_pipeline.shard_pool_rows``). The
Haar transform (``data/wavelet.haar_dwt``) then runs where the model runs (``DiffusionModel.to_model_space``: on the GPU
in production); it is timed here on the CPU, separately, as the pessimistic case.

Steps:
    1. write ``images`` files per format and colour (JPEG, PNG, DICOM; grayscale and RGB) at ``image_size`` px into a
       temporary folder: the first images of the real ISIC data set (``isic_skin_180`` under ``config.data_root()``)
       upsampled bicubically (grayscale: their ITU-R 601 luma), else the built-in phantoms (``data/phantoms.py``);
       DICOM as uncompressed 8-bit MONOCHROME2 / RGB with pydicom, as ``tests/dicom_files.py`` writes them;
    2. in this process on one thread (``torch.set_num_threads(1)``): decode (with its resize, a no-op when the file
       is already ``image_size`` px) in batches of ``shard_size`` rows, as a scoring shard does, then ``haar_dwt``;
       best of ``repeats`` passes after a warm-up;
    3. through the scoring job's Ray Data pipeline (``scoring.shards.plan_shards`` and ``read_slice``,
       ``scoring.ray_pipeline.shard_pool_rows``) with a pool of 1 and of 2 one-CPU, one-thread actors, each running
       ``DecodeShard`` (decode + DWT of its shard's rows, no model) instead of ``ShardScorer``; images/s over the span
       from the first shard's start to the last shard's end (actor start-up excluded; shown apart as wall time).
Besides wall-clock rates, every step's CPU time (``time.thread_time`` of the decoding thread) gives images per
CPU-second, with and without the DWT: what a dedicated core does, much less sensitive to other work on shared cores.
Files are read from the page cache (they were just written): network or disk reads are not included.
Figures, never assertions: tests check the plumbing only.

Sizing: ``slowest_per_core`` gives the per-core decode rate of the slowest format, which ``meddiff plan --datapath``
turns into CPUs per GPU actor and per training worker (``sizing/plan.py``, from the config's FLOPs at full size).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from meddiff.errors import ConfigError

FORMATS = ("jpeg", "png", "dicom")
COLOURS = ("gray", "rgb")
ISIC_FOLDER = "isic_skin_180"


@dataclass(frozen=True)
class DataPathConfig:
    """What ``run_datapath`` measures.

    images: files per format and colour. image_size / channels: the decoder's output (the production configs: 256, 3;
    grayscale files are repeated to 3 channels). ray_cpus: Ray pool sizes (one CPU, one thread per actor; empty: no
    Ray). shard_size: rows per scoring shard at most (``score.shard_size``; also the in-process batch). repeats:
    timed in-process passes (the fastest kept).
    """

    images: int = 200
    image_size: int = 256
    channels: int = 3
    aspect: str = "pad"
    jpeg_quality: int = 90
    formats: tuple[str, ...] = FORMATS
    colours: tuple[str, ...] = COLOURS
    ray_cpus: tuple[int, ...] = (1, 2)
    shard_size: int = 256  # ScoreConfig.shard_size; plan_shards cuts at least 2 shards per actor
    repeats: int = 3

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, expected: str, got: Any) -> None:
            if not ok:
                raise ConfigError(f"bench --data-path {key}: expected {expected}, got {got!r}")

        need(self.images >= 1, "images", "a positive number of images per format", self.images)
        need(self.image_size >= 2 and self.image_size % 2 == 0, "image_size", "an even size (the Haar DWT halves it)",
             self.image_size)
        need(set(self.formats) <= set(FORMATS) and self.formats, "formats", f"some of {FORMATS}", self.formats)
        need(set(self.colours) <= set(COLOURS) and self.colours, "colours", f"some of {COLOURS}", self.colours)
        need(all(c >= 1 for c in self.ray_cpus), "ray_cpus", "positive pool sizes", self.ray_cpus)
        need(self.shard_size >= 1 and self.repeats >= 1, "shard_size / repeats", "positive integers",
             (self.shard_size, self.repeats))


@dataclass(frozen=True)
class RayThroughput:
    """One format through the Ray Data scoring pipeline on ``cpus`` one-CPU, one-thread actors."""

    cpus: int
    images_per_s: float  # over the span of the shards (first start to last end): actor start-up excluded
    images_per_s_per_core: float
    images_per_cpu_s: float  # images per CPU-second of the actors' shard work: read + decode + DWT
    decode_images_per_cpu_s: float  # the same without the DWT (which runs on the GPU in production)
    wall_s: float  # the whole pipeline, actor start-up included
    shards: int
    actors_used: int


@dataclass(frozen=True)
class FormatThroughput:
    """One format and colour: file sizes, in-process throughput on one thread, Ray throughput per pool size."""

    name: str  # e.g. "JPEG gray"
    format: str
    colour: str
    images: int
    mean_file_kib: float
    total_file_mib: float
    images_per_s: float  # in process, one thread: decode + resize + DWT, per wall-clock second
    images_per_cpu_s: float  # the same per CPU-second of the thread (robust to cores shared with other work)
    decode_images_per_cpu_s: float  # decode + resize only, per CPU-second (the DWT runs on the GPU in production)
    decode_ms: float  # per image
    dwt_ms: float  # per image
    ray: tuple[RayThroughput, ...] = ()


@dataclass(frozen=True)
class DataPathResult:
    source: str  # where the pixels came from
    image_size: int
    channels: int
    aspect: str
    conditions: dict[str, Any]  # machine, load averages before and after, Ray pool settings
    formats: tuple[FormatThroughput, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataPathResult:
        """The result of a datapath.json (``to_dict``)."""
        formats = tuple(FormatThroughput(**{**f, "ray": tuple(RayThroughput(**r) for r in f["ray"])})
                        for f in data["formats"])
        return cls(**{**data, "formats": formats})


# --- sizing: pure functions -------------------------------------------------------------------------------------------

def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ConfigError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


# --- test files --------------------------------------------------------------------------------------------------------

def source_pixels(n: int, size: int, data_root: Path | None = None) -> tuple[list[np.ndarray], str]:
    """``n`` RGB uint8 [size, size, 3] images and where they came from: the first ``n`` ISIC images (sorted by path,
    cycled when there are fewer) upsampled bicubically, else the phantoms (grayscale repeated to RGB)."""
    from PIL import Image

    if data_root is None:
        from meddiff.config import data_root as default_root

        data_root = default_root()
    files = sorted(Path(data_root, ISIC_FOLDER).glob("*/*/*.jpg"))
    if files:
        out = []
        for k in range(n):
            with Image.open(files[k % len(files)]) as im:
                out.append(np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)))
        return out, f"{ISIC_FOLDER} ({min(n, len(files))} distinct images, upsampled to {size} px)"
    from meddiff.data.phantoms import render_phantom

    out = [np.repeat(render_phantom(0, k, k % 2, size=size)[..., None], 3, axis=2) for k in range(n)]
    return out, f"phantoms ({size} px; no {ISIC_FOLDER} under {data_root})"


def write_dicom_image(path: Path, pixels: np.ndarray) -> Path:
    """An uncompressed 8-bit DICOM file (explicit VR little endian): MONOCHROME2 for [H, W], RGB for [H, W, 3]."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    colour = pixels.ndim == 3
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_files(folder: Path, pixels: list[np.ndarray], fmt: str, colour: str, jpeg_quality: int = 90) -> list[Path]:
    """Write every image of ``pixels`` (RGB uint8) as ``fmt`` in ``colour`` (gray: PIL's ITU-R 601 luma)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, rgb in enumerate(pixels):
        image = Image.fromarray(rgb)
        if colour == "gray":
            image = image.convert("L")
        path = folder / f"{k:05d}.{ {'jpeg': 'jpg', 'png': 'png', 'dicom': 'dcm'}[fmt]}"
        if fmt == "dicom":
            write_dicom_image(path, np.asarray(image))
        elif fmt == "jpeg":
            image.save(path, quality=jpeg_quality)
        else:
            image.save(path)
        paths.append(path)
    return paths


def file_frame(paths: list[Path], name: str) -> pd.DataFrame:
    """A manifest frame (``data.manifest.MANIFEST_COLUMNS``) of the files, ids ``<name>-00000`` ..."""
    from meddiff.data.manifest import manifest_frame

    slug = name.replace(" ", "-").lower()
    return manifest_frame(ids=[f"{slug}-{k:05d}" for k in range(len(paths))], labels=[0] * len(paths),
                          source="bench", paths=[str(p) for p in paths], splits=["test"] * len(paths))


# --- in process --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Seconds of one batch: wall clock and CPU time of the calling thread, for the decode and for the DWT."""

    decode_s: float
    dwt_s: float
    decode_cpu_s: float
    dwt_cpu_s: float

    def __add__(self, other: Timing) -> Timing:
        return Timing(*(a + b for a, b in zip(astuple(self), astuple(other))))


def decode_and_transform(decoder, rows: list[dict[str, Any]]) -> tuple[Any, Timing]:
    """Decode ``rows`` as a scoring shard does (``decode_batch_noted``, one thread), then the Haar DWT of the batch:
    (coefficients [B, 4C, S/2, S/2], its ``Timing``). A row that cannot be decoded raises ``DataError`` (the files
    are ours)."""
    from meddiff.data.wavelet import haar_dwt
    from meddiff.errors import DataError

    t0, c0 = time.perf_counter(), time.thread_time()
    images, errors, _ = decoder.decode_batch_noted(rows)
    t1, c1 = time.perf_counter(), time.thread_time()
    coefficients = haar_dwt(images)
    t2, c2 = time.perf_counter(), time.thread_time()
    bad = [e for e in errors if e is not None]
    if bad:
        raise DataError(f"bench --data-path: {len(bad)} of {len(rows)} benchmark files failed to decode: {bad[0]}")
    return coefficients, Timing(t1 - t0, t2 - t1, c1 - c0, c2 - c1)


def local_throughput(decoder, frame: pd.DataFrame, shard_size: int, repeats: int) -> Timing:
    """The ``Timing`` of one pass over ``frame`` in batches of ``shard_size`` rows (as scoring shards) on this
    thread: the pass of least wall clock of ``repeats``, after a warm-up."""
    rows = frame.to_dict("records")
    decode_and_transform(decoder, rows[: min(len(rows), 4)])
    passes = []
    for _ in range(repeats):
        total = Timing(0.0, 0.0, 0.0, 0.0)
        for start in range(0, len(rows), shard_size):
            total = total + decode_and_transform(decoder, rows[start : start + shard_size])[1]
        passes.append(total)
    return min(passes, key=lambda t: t.decode_s + t.dwt_s)


# --- Ray: the scoring job's pipeline with a decode-only actor ------------------------------------------------------------

class DecodeShard:
    """Ray Data callable class for ``scoring.ray_pipeline.shard_pool_rows``: the scoring actor (``ShardScorer``)
    without the model. Per shard: read the planned manifest slice, decode its rows and Haar-transform them."""

    def __init__(self, image_size: int, channels: int, aspect: str, out_dir: str, shard_size: int, num_rows: int,
                 ids_sha256: str, num_threads: int) -> None:
        import torch

        from meddiff.data import ImageDecoder
        from meddiff.scoring.shards import ShardPlan

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        from meddiff.scoring.shards import read_slice

        self.decoder = ImageDecoder(image_size, channels, aspect=aspect)
        self.plan = ShardPlan(Path(out_dir), shard_size, num_rows, ids_sha256)
        # warm-up, as ShardScorer loads its model here: first-call costs (lazy imports, PIL / pydicom plugin set-up)
        # are paid once per actor of a long job, not per shard
        decode_and_transform(self.decoder, read_slice(self.plan, 0)[:2])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from meddiff.scoring.shards import read_slice

        stats = []
        for k in batch["shard"]:
            start, cpu = time.time(), time.thread_time()  # wall clock: comparable across actor processes
            rows = read_slice(self.plan, int(k))
            read_cpu = time.thread_time() - cpu
            _, timing = decode_and_transform(self.decoder, rows)
            stats.append((int(k), len(rows), start, time.time(), read_cpu + timing.decode_cpu_s, timing.dwt_cpu_s))
        keys = ("shard", "rows", "start", "end", "decode_cpu_s", "dwt_cpu_s")
        out = {key: np.array([s[i] for s in stats]) for i, key in enumerate(keys)}
        out["actor_pid"] = np.full(len(stats), os.getpid())
        return out


def ray_throughput(frame: pd.DataFrame, cfg: DataPathConfig, cpus: int, work_dir: Path) -> RayThroughput:
    """Decode + DWT of ``frame`` through the scoring pipeline on ``cpus`` one-CPU, one-thread actors (Ray must be
    initialised with at least ``cpus`` CPUs)."""
    from meddiff.config import RayConfig
    from meddiff.scoring.ray_pipeline import shard_pool_rows
    from meddiff.scoring.shards import plan_shards

    plan = plan_shards(frame, work_dir, cfg.shard_size, min_shards=2 * cpus)
    ray_cfg = RayConfig(actors=cpus, cpus_per_actor=1.0, threads_per_actor=1, use_gpu=False)
    t0 = time.time()
    stats = list(shard_pool_rows(DecodeShard, {
        "image_size": cfg.image_size, "channels": cfg.channels, "aspect": cfg.aspect, "out_dir": str(work_dir),
        "shard_size": plan.shard_size, "num_rows": plan.num_rows, "ids_sha256": plan.ids_sha256,
    }, plan.pending(), ray_cfg, log=lambda _line: None))
    wall = time.time() - t0
    rows = sum(int(s["rows"]) for s in stats)
    span = max(float(s["end"]) for s in stats) - min(float(s["start"]) for s in stats)
    rate = rows / span
    decode_cpu = sum(float(s["decode_cpu_s"]) for s in stats)
    dwt_cpu = sum(float(s["dwt_cpu_s"]) for s in stats)
    return RayThroughput(cpus=cpus, images_per_s=round(rate, 1), images_per_s_per_core=round(rate / cpus, 1),
                         images_per_cpu_s=round(rows / max(decode_cpu + dwt_cpu, 1e-9), 1),
                         decode_images_per_cpu_s=round(rows / max(decode_cpu, 1e-9), 1),
                         wall_s=round(wall, 2), shards=len(stats),
                         actors_used=len({int(s["actor_pid"]) for s in stats}))


# --- the run -------------------------------------------------------------------------------------------------------------

def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def measure_format(decoder, folder: Path, pixels: list[np.ndarray], fmt: str, colour: str, cfg: DataPathConfig,
                   log: Callable[[str], None]) -> tuple[FormatThroughput, pd.DataFrame]:
    """Write ``pixels`` as ``fmt`` / ``colour`` files under ``folder`` and time them in process on the current threads
    (``local_throughput``); returns the figures (no Ray yet) and the files' manifest frame."""
    name = f"{'DICOM' if fmt == 'dicom' else fmt.upper()} {colour}"
    paths = write_files(folder / f"{fmt}-{colour}", pixels, fmt, colour, cfg.jpeg_quality)
    sizes = [p.stat().st_size for p in paths]
    frame = file_frame(paths, name)
    t = local_throughput(decoder, frame, cfg.shard_size, cfg.repeats)
    n = len(paths)
    row = FormatThroughput(
        name=name, format=fmt, colour=colour, images=n, mean_file_kib=round(float(np.mean(sizes)) / 1024, 1),
        total_file_mib=round(sum(sizes) / 2**20, 2), images_per_s=round(n / (t.decode_s + t.dwt_s), 1),
        images_per_cpu_s=round(n / max(t.decode_cpu_s + t.dwt_cpu_s, 1e-9), 1),
        decode_images_per_cpu_s=round(n / max(t.decode_cpu_s, 1e-9), 1), decode_ms=round(1e3 * t.decode_s / n, 3),
        dwt_ms=round(1e3 * t.dwt_s / n, 3))
    log(f"[datapath] {name:11s} {row.mean_file_kib:7.1f} KiB/file  in process, 1 thread: {row.images_per_s:7.1f} "
        f"img/s, {row.images_per_cpu_s:7.1f} img per CPU-s, {row.decode_images_per_cpu_s:7.1f} without the DWT "
        f"(decode {row.decode_ms:.2f} ms + DWT {row.dwt_ms:.2f} ms per image)")
    return row, frame


def run_datapath(out_dir: str | Path, cfg: DataPathConfig = DataPathConfig(), data_root: Path | None = None,
                 log: Callable[[str], None] = print) -> DataPathResult:
    """Measure every format of ``cfg`` (module docstring); write datapath.json and datapath.md into ``out_dir``."""
    import torch

    from meddiff.bench.run import machine
    from meddiff.data import ImageDecoder

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decoder = ImageDecoder(cfg.image_size, cfg.channels, aspect=cfg.aspect)
    load_before = _load()
    threads = torch.get_num_threads()
    rows: list[FormatThroughput] = []
    with tempfile.TemporaryDirectory(prefix="meddiff-datapath-") as tmp:
        pixels, source = source_pixels(cfg.images, cfg.image_size, data_root)
        log(f"[datapath] {cfg.images} images per format from {source}")
        frames: dict[str, pd.DataFrame] = {}
        torch.set_num_threads(1)
        try:
            for fmt in cfg.formats:
                for colour in cfg.colours:
                    row, frames[f"{fmt}-{colour}"] = measure_format(decoder, Path(tmp, "files"), pixels, fmt, colour,
                                                                    cfg, log)
                    rows.append(row)
        finally:
            torch.set_num_threads(threads)
        if cfg.ray_cpus:
            rows = _with_ray(rows, frames, cfg, Path(tmp, "ray"), log)
    conditions = {"machine": machine(), "load_average_before": load_before, "load_average_after": _load(),
                  "in_process_threads": 1, "ray_actor": "1 CPU, 1 thread" if cfg.ray_cpus else None,
                  "files": "page cache (just written)", "shard_size": cfg.shard_size, "repeats": cfg.repeats}
    result = DataPathResult(source=source, image_size=cfg.image_size, channels=cfg.channels, aspect=cfg.aspect,
                            conditions=conditions, formats=tuple(rows))
    (out_dir / "datapath.json").write_text(json.dumps(result.to_dict(), indent=2))
    (out_dir / "datapath.md").write_text(markdown(result))
    return result


def _with_ray(rows: list[FormatThroughput], frames: dict[str, pd.DataFrame], cfg: DataPathConfig, work: Path,
              log: Callable[[str], None]) -> list[FormatThroughput]:
    import ray

    from meddiff.raycluster import ensure_ray

    # one logical CPU beyond the pool keeps Ray Data's own small tasks schedulable beside the actors
    started = ensure_ray("", num_cpus=max(cfg.ray_cpus) + 1)
    try:
        out = []
        for row in rows:
            measured = []
            for cpus in cfg.ray_cpus:
                measured.append(ray_throughput(frames[f"{row.format}-{row.colour}"], cfg, cpus,
                                               work / f"{row.format}-{row.colour}-{cpus}"))
                r = measured[-1]
                log(f"[datapath] {row.name:11s} Ray Data, {cpus} CPU(s): {r.images_per_s:7.1f} img/s = "
                    f"{r.images_per_s_per_core:7.1f} per core, {r.images_per_cpu_s:7.1f} per CPU-s, "
                    f"{r.decode_images_per_cpu_s:7.1f} without the DWT ({r.shards} shards, {r.wall_s} s with start-up)")
            out.append(FormatThroughput(**{**asdict(row), "ray": tuple(measured)}))
        return out
    finally:
        if started:
            ray.shutdown()


def markdown(result: DataPathResult) -> str:
    """The table of ``result`` and the slowest format's decode rate per core (``meddiff plan --datapath``)."""
    pools = sorted({r.cpus for f in result.formats for r in f.ray})
    m, c = result.conditions["machine"], result.conditions
    lines = [f"# meddiff data path — {result.formats[0].images if result.formats else 0} images per format at "
             f"{result.image_size} px, {result.channels} channels, aspect {result.aspect}", "",
             f"Pixels: {result.source}. Machine: {m['cpu']} ({m['cores']} cores), torch {m['torch']}; load average "
             f"{c['load_average_before']} before, {c['load_average_after']} after. Files read from the page cache. "
             "img/s: per wall-clock second; per CPU-s: images per CPU-second spent (what a dedicated core would do); "
             "no DWT: read + decode + resize only (the Haar DWT runs on the GPU in production).", "",
             "| format | KiB / file | 1 thread: img/s | per CPU-s | per CPU-s, no DWT | decode ms / img | DWT ms / img | "
             + " | ".join(f"Ray {n} CPU: img/s | per core | per CPU-s, no DWT" for n in pools) + (" |" if pools else ""),
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|---:|---:|" * len(pools)]
    for f in result.formats:
        by = {r.cpus: r for r in f.ray}
        cells = " | ".join(f"{by[n].images_per_s:.1f} | {by[n].images_per_s_per_core:.1f} | "
                           f"{by[n].decode_images_per_cpu_s:.1f}" if n in by else "- | - | -" for n in pools)
        lines.append(f"| {f.name} | {f.mean_file_kib:.1f} | {f.images_per_s:.1f} | {f.images_per_cpu_s:.1f} | "
                     f"{f.decode_images_per_cpu_s:.1f} | {f.decode_ms:.2f} | {f.dwt_ms:.2f} | " + cells
                     + (" |" if pools else ""))
    if result.formats:
        slowest = min(result.formats, key=per_core)
        lines += ["", f"Slowest format: {slowest.name}, {per_core(slowest):.1f} images per CPU-second without the DWT "
                  "(`meddiff plan CONFIG --datapath datapath.json` sizes CPUs per GPU actor from it)."]
    return "\n".join(lines) + "\n"


def slowest_per_core(result: DataPathResult) -> float:
    """The decode rate per core (``per_core``) of ``result``'s slowest format: what sizing CPUs per GPU assumes."""
    if not result.formats:
        raise ConfigError("datapath: the result has no formats measured")
    return min(per_core(f) for f in result.formats)


def read_datapath(path: str | Path) -> DataPathResult:
    """A ``meddiff bench --data-path`` datapath.json, with an error naming the file when it is not one."""
    try:
        return DataPathResult.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected the datapath.json of `meddiff bench --data-path` ({exc})") from exc


def per_core(f: FormatThroughput) -> float:
    """A format's decode rate per core for sizing: images per CPU-second of read + decode + resize through the Ray
    pipeline on one actor of one CPU (else the smallest pool measured, else in process); without the DWT (it runs on
    the GPU, ``DiffusionModel.to_model_space``); per CPU-second, so cores shared with other work do not understate it
    as much as wall-clock rates do."""
    return min(f.ray, key=lambda r: r.cpus).decode_images_per_cpu_s if f.ray else f.decode_images_per_cpu_s
