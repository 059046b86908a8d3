"""Leakage checks across the splits of a manifest: shared groups, identical images, near-identical images.

A test image that also sits in training (the same patient, the same file, or the same picture re-encoded or brightened)
inflates every figure computed on the test split. ``check_leakage`` counts, across splits:
    groups          groups (patients, lesions) whose rows fall in two or more splits;
    exact           pairs of rows in different splits with identical content: md5 of the file's bytes, or of the .npz
                    row's array bytes (with its shape and dtype), or of the rendered phantom;
    near            pairs in different splits, not identical, whose 64-bit difference hashes (dHash: the grayscale image
                    resized to 9 x 8, one bit per horizontally adjacent pair, "is the left pixel brighter") differ in at
                    most ``NEAR_MAX_DISTANCE`` bits (candidates), confirmed by the Pearson correlation of the two
                    32 x 32 grayscale images being >= ``NEAR_MIN_CORRELATION``. dHash compares neighbouring pixels, so a
                    brightened or re-encoded copy keeps (almost) the same hash and a correlation near 1. The
                    confirmation is needed on small, similar images: on PneumoniaMNIST (28 px chest X-rays) 17 137
                    cross-split pairs share a dHash within 4 bits, but only a handful correlate above 0.98 (the
                    99.9th percentile of random pairs is 0.89 there).
Near pairs are found by multi-index hashing (Norouzi, Punjani & Fleet, "Fast search in Hamming space with multi-index
hashing", CVPR 2012): the 64 bits are cut into ``NEAR_MAX_DISTANCE + 1`` bands, and two hashes within that distance
agree exactly on at least one band (pigeonhole), so only rows sharing a band value are compared, not all N^2 pairs.

Levels (``data.leakage_check``): ``full`` = groups + exact + near, ``exact`` = groups + exact, ``groups``, ``off``.
Per-image hashes are cached in this process, keyed by (path, size, mtime, array key, index), so building the same
manifest twice reads each file once.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from meddiff.config import IMAGE_FORMATS
from meddiff.errors import DataError
from meddiff.data.npz import cached_npz_key
from meddiff.data.phantoms import PHANTOM_SCHEME, parse_phantom_uri, render_phantom

LEVELS = ("full", "exact", "groups", "off")
NEAR_MAX_DISTANCE = 4  # of 64 dHash bits; a brightened or re-encoded copy differs in 0-2, unrelated images in ~32
NEAR_MIN_CORRELATION = 0.98  # Pearson correlation of the 32 x 32 grayscale images that confirms a candidate pair
THUMB = 32
MAX_EXAMPLES = 10
_BLOCK = 2048  # rows compared at once inside a large bucket (memory bound _BLOCK^2 uint64)

_HASH_CACHE: dict[tuple, tuple[str, int | None]] = {}  # dHash None: not computed; _UNDECODABLE: cannot decode
_UNDECODABLE = -1
_THUMB_CACHE: dict[tuple, np.ndarray] = {}  # only images that were near-duplicate candidates


def check_leakage(frame: pd.DataFrame, level: str = "full", official_splits: bool = False) -> dict[str, Any]:
    """The leakage report of a split manifest frame (columns id, split, group, path, array_key, array_index, label).

    Returns a plain dict: ``level``, ``official_splits``, ``seconds`` and, per level, ``groups`` / ``exact_duplicates``
    / ``near_duplicates`` blocks, each with a count across splits and up to ``MAX_EXAMPLES`` examples (ids); the
    duplicate blocks also count the images involved and how many of them are test images (a test image with a copy in
    train or val is not an independent test case).
    """
    if level not in LEVELS:
        raise DataError(f"data.leakage_check: expected one of {LEVELS}, got {level!r}")
    start = time.perf_counter()
    report: dict[str, Any] = {"level": level, "official_splits": bool(official_splits)}
    if level == "off":
        return report
    splits = frame["split"].to_numpy(dtype=object).astype(str)
    ids = frame["id"].to_numpy(dtype=object).astype(str)
    report["groups"] = groups_across_splits(frame["group"].astype(str).to_numpy(), splits)
    if level in ("exact", "full"):
        md5s, dhashes, decoded = image_hashes(frame, with_dhash=level == "full")
        report["exact_duplicates"] = exact_across_splits(md5s, splits, ids)
        if level == "full":
            records = frame[["id", "path", "array_key", "array_index", "label"]].to_dict("records")
            report["near_duplicates"] = near_across_splits(dhashes, md5s, splits, ids, NEAR_MAX_DISTANCE,
                                                           lambda i: _thumbnail(records[i]), decoded=decoded)
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


def summary_line(report: dict[str, Any]) -> str:
    """One line for the build log: the counts of each check that ran."""
    if report.get("level") == "off":
        return "leakage checks off"
    parts = [f"groups across splits {report['groups']['across_splits']}"]
    if "exact_duplicates" in report:
        parts.append(f"exact duplicate pairs across splits {report['exact_duplicates']['pairs_across_splits']}")
    if "near_duplicates" in report:
        near = report["near_duplicates"]
        parts.append(f"near-duplicate pairs across splits {near['pairs_across_splits']} (dHash Hamming <= "
                     f"{near['max_hamming']}: {near['candidates']} candidates, confirmed by correlation >= "
                     f"{near['min_correlation']})")
    return "; ".join(parts) + f" ({report.get('seconds', 0):.1f} s)"


def groups_across_splits(groups: np.ndarray, splits: np.ndarray) -> dict[str, Any]:
    """Groups whose rows fall in more than one split: count and examples {group: [splits]}."""
    table = pd.DataFrame({"group": groups, "split": splits})
    per_group = table.groupby("group", sort=True)["split"].nunique()
    leaking = per_group[per_group > 1].index.tolist()
    examples = {g: sorted(table.loc[table["group"] == g, "split"].unique().tolist()) for g in leaking[:MAX_EXAMPLES]}
    return {"n_groups": int(len(per_group)), "across_splits": len(leaking), "examples": examples}


def exact_across_splits(md5s: np.ndarray, splits: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """Pairs of rows in different splits with the same content hash."""
    md5_codes = np.unique(np.asarray(md5s).astype(str), return_inverse=True)[1]
    split_codes = np.unique(np.asarray(splits).astype(str), return_inverse=True)[1]
    n_splits_of = np.zeros(md5_codes.max() + 1 if len(md5_codes) else 0, dtype=np.int64)
    np.add.at(n_splits_of, np.unique(np.stack([md5_codes, split_codes]), axis=1)[0], 1)
    pairs, examples, images = 0, [], set()
    for code in np.flatnonzero(n_splits_of > 1):  # only identical contents that span splits
        members = np.flatnonzero(md5_codes == code)
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                ra, rb = members[a], members[b]
                if splits[ra] != splits[rb]:
                    pairs += 1
                    images.update(((str(ids[ra]), str(splits[ra])), (str(ids[rb]), str(splits[rb]))))
                    if len(examples) < MAX_EXAMPLES:
                        examples.append({"a": str(ids[ra]), "b": str(ids[rb]), "splits": [str(splits[ra]), str(splits[rb])]})
    return {"hash": "md5 of file bytes / npz row bytes", "pairs_across_splits": pairs, "images_involved": len(images),
            "test_images_involved": sum(split == "test" for _, split in images), "examples": examples}


def near_across_splits(dhashes: np.ndarray, md5s: np.ndarray, splits: np.ndarray, ids: np.ndarray,
                       max_distance: int, thumbnail, min_correlation: float = NEAR_MIN_CORRELATION,
                       decoded: np.ndarray | None = None) -> dict[str, Any]:
    """Pairs in different splits, with different md5, whose dHashes differ in <= max_distance bits (candidates) and
    whose ``thumbnail(i)`` images ([32, 32]) correlate >= min_correlation (confirmed). Vectorised: one thumbnail per
    candidate image, correlations of the candidate pairs in chunks. ``decoded``: [N] bool, False for rows whose image
    could not be decoded (they are left out and counted as ``undecodable``; scoring marks them as failed rows)."""
    usable = np.flatnonzero(np.ones(len(dhashes), bool) if decoded is None else decoded)
    i, j, d = near_pair_arrays(np.asarray(dhashes)[usable], max_distance, np.asarray(splits)[usable])
    i, j = usable[i], usable[j]
    differ = np.asarray(md5s)[i] != np.asarray(md5s)[j]
    i, j, d = i[differ], j[differ], d[differ]
    rows = np.unique(np.concatenate([i, j]))
    corr = np.empty(len(i), dtype=np.float64)
    if len(rows):
        thumbs = np.stack([np.asarray(thumbnail(int(r)), dtype=np.float32).reshape(-1) for r in rows])
        thumbs -= thumbs.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(thumbs, axis=1, keepdims=True)
        thumbs /= np.where(norms > 0, norms, 1.0)
        where = np.searchsorted(rows, i), np.searchsorted(rows, j)
        for k in range(0, len(i), 1 << 16):
            corr[k:k + (1 << 16)] = np.einsum("nd,nd->n", thumbs[where[0][k:k + (1 << 16)]],
                                              thumbs[where[1][k:k + (1 << 16)]])
    hit = np.flatnonzero(corr >= min_correlation)
    hit = hit[np.lexsort((ids[i[hit]].astype(str), d[hit], -corr[hit]))]
    involved = np.unique(np.concatenate([i[hit], j[hit]]))
    examples = [{"a": str(ids[i[k]]), "b": str(ids[j[k]]), "splits": [str(splits[i[k]]), str(splits[j[k]])],
                 "hamming": int(d[k]), "correlation": round(float(corr[k]), 4)} for k in hit[:MAX_EXAMPLES]]
    return {"hash": "dHash 64 bit (grayscale 9x8)", "max_hamming": int(max_distance),
            "min_correlation": float(min_correlation), "undecodable": int(len(dhashes) - len(usable)),
            "candidates": int(len(i)),
            "pairs_across_splits": int(len(hit)), "images_involved": int(len(involved)),
            "test_images_involved": int((splits[involved] == "test").sum()), "examples": examples}


def near_pairs(hashes: np.ndarray, max_distance: int, labels: np.ndarray | None = None) -> set[tuple[int, int, int]]:
    """{(i, j, distance)}, i < j, of uint64 hashes within ``max_distance`` bits (see ``near_pair_arrays``)."""
    return {(int(a), int(b), int(c)) for a, b, c in zip(*near_pair_arrays(hashes, max_distance, labels))}


def near_pair_arrays(hashes: np.ndarray, max_distance: int,
                     labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[P] i, [P] j (i < j, sorted, unique) and [P] Hamming distance of every pair of uint64 hashes within
    ``max_distance`` bits, by multi-index hashing (exact: every such pair is found). With ``labels`` ([N], e.g.
    splits), only pairs with different labels are kept."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)[1] if labels is not None else None
    n_bands = max_distance + 1
    edges = np.linspace(0, 64, n_bands + 1).round().astype(int)
    found: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    for low, high in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(high - low)) - 1)
        keys = (hashes >> np.uint64(low)) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
        stops = np.concatenate([starts[1:], [len(order)]])
        for start, stop in zip(starts[stops - starts > 1], stops[stops - starts > 1]):
            members = np.sort(order[start:stop])
            if codes is not None and len(np.unique(codes[members])) < 2:
                continue
            found += _compare_bucket(hashes, members, codes, max_distance)
    pair = np.unique(np.concatenate(found))  # i * n + j
    i, j = pair // max(n, 1), pair % max(n, 1)
    return i, j, np.bitwise_count(hashes[i] ^ hashes[j]).astype(np.int64)


def _compare_bucket(hashes: np.ndarray, members: np.ndarray, codes: np.ndarray | None,
                    max_distance: int) -> list[np.ndarray]:
    """Pairs (as i * N + j, i < j) of one bucket within ``max_distance``, compared in blocks of ``_BLOCK`` rows."""
    out = []
    for a in range(0, len(members), _BLOCK):
        left = members[a:a + _BLOCK]
        for b in range(a, len(members), _BLOCK):
            right = members[b:b + _BLOCK]
            dist = np.bitwise_count(hashes[left][:, None] ^ hashes[right][None, :])
            hit = (dist <= max_distance) & (left[:, None] < right[None, :])
            if codes is not None:
                hit &= codes[left][:, None] != codes[right][None, :]
            li, ri = np.nonzero(hit)
            out.append(left[li].astype(np.int64) * len(hashes) + right[ri].astype(np.int64))
    return out


def image_hashes(frame: pd.DataFrame, with_dhash: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[N] md5 hex strings, [N] uint64 dHashes (zeros without ``with_dhash``) and [N] bool "decoded" of the rows'
    images (an image that does not decode has an md5 of its bytes but no dHash)."""
    md5s = np.empty(len(frame), dtype=object)
    dhashes = np.zeros(len(frame), dtype=np.uint64)
    decoded = np.ones(len(frame), dtype=bool)
    for position, row in enumerate(frame[["id", "path", "array_key", "array_index", "label"]].itertuples(index=False)):
        md5, dh = _row_hashes(str(row.path), str(row.array_key), int(row.array_index), int(row.label), str(row.id),
                              with_dhash)
        md5s[position] = md5
        decoded[position] = dh != _UNDECODABLE
        dhashes[position] = np.uint64(dh) if dh is not None and dh != _UNDECODABLE else np.uint64(0)
    return md5s, dhashes, decoded


def dhash(gray: Image.Image | np.ndarray) -> int:
    """64-bit difference hash of an image: grayscale, resized (bilinear) to 9 x 8, bit = left pixel > right pixel,
    row-major, first bit most significant."""
    image = gray if isinstance(gray, Image.Image) else Image.fromarray(np.asarray(gray))
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, :-1] > small[:, 1:]).reshape(-1)
    return int(np.packbits(bits).view(">u8")[0])


def _thumbnail(row: dict) -> np.ndarray:
    """[32, 32] uint8 grayscale of a manifest row's image (bilinear), for confirming near-duplicate candidates;
    cached like the hashes (by path, size, mtime, array key, index)."""
    path, key, index = str(row["path"]), str(row["array_key"]), int(row["array_index"])
    cache_key = (path, index, int(row["label"])) if path.startswith(PHANTOM_SCHEME) else \
        (path, os.stat(path).st_size, os.stat(path).st_mtime_ns, key, index)
    if cache_key not in _THUMB_CACHE:
        _THUMB_CACHE[cache_key] = _decode_thumbnail(row, path, key, index)
    return _THUMB_CACHE[cache_key]


def _decode_thumbnail(row: dict, path: str, key: str, index: int) -> np.ndarray:
    if path.startswith(PHANTOM_SCHEME):
        image = Image.fromarray(render_phantom(parse_phantom_uri(path), index, int(row["label"])))
    elif key:
        image = Image.fromarray(np.ascontiguousarray(cached_npz_key(path, key)[index]))
    else:
        with open(path, "rb") as handle:
            image = _open_small(handle.read(), path, str(row["id"]))
        if image is None:
            raise DataError(f"{path} (manifest id {row['id']!r}): decoded for its hash but not for its thumbnail")
    return np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR))


def _row_hashes(path: str, key: str, index: int, label: int, row_id: str, with_dhash: bool) -> tuple[str, int | None]:
    if path.startswith(PHANTOM_SCHEME):
        cache_key: tuple = (path, index, label)
    else:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise DataError(f"{path} (manifest id {row_id!r}): cannot read it for the leakage check ({exc})") from None
        cache_key = (path, stat.st_size, stat.st_mtime_ns, key, index)
    cached = _HASH_CACHE.get(cache_key)
    if cached is not None and (cached[1] is not None or not with_dhash):
        return cached
    if path.startswith(PHANTOM_SCHEME):
        pixels = render_phantom(parse_phantom_uri(path), index, label)
        md5 = hashlib.md5(pixels.tobytes()).hexdigest()
        image = Image.fromarray(pixels) if with_dhash else None
    elif key:
        pixels = np.ascontiguousarray(cached_npz_key(path, key)[index])
        md5 = hashlib.md5(f"{pixels.shape}{pixels.dtype.str}".encode() + pixels.tobytes()).hexdigest()
        image = Image.fromarray(pixels) if with_dhash else None
    else:
        with open(path, "rb") as handle:
            data = handle.read()
        md5 = hashlib.md5(data).hexdigest()
        image = _open_small(data, path, row_id) if with_dhash else None
    result = (md5, dhash(image) if image is not None else (_UNDECODABLE if with_dhash else None))
    _HASH_CACHE[cache_key] = result
    return result


def _open_small(data: bytes, path: str, row_id: str) -> Image.Image | None:
    """The image, decoded at a reduced size when the format allows (JPEG draft mode): dHash needs 9 x 8 pixels.
    None when it does not decode: the leakage check skips it, scoring reports the row as failed
    (``meddiff.data.decode``)."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # never another plugin (EPS runs Ghostscript)
        image.draft("L", (64, 64))
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None
    if image.mode not in ("L", "RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
        image = Image.fromarray(_to_uint8(np.asarray(image)))
    return image


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    low, high = float(array.min()), float(array.max())
    return np.zeros(array.shape, np.uint8) if high <= low else ((array - low) * (255.0 / (high - low))).astype(np.uint8)
