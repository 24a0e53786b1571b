"""`curate validate`: prove a run directory is internally consistent.

Checks what readers silently get wrong elsewhere: every shard still has the bytes it was written with
(its SHA-256, recorded at commit), every tar member decodes and matches its metadata row, every kept row
has its members, nothing is in a tar that the metadata does not know, uids are unique, and the row count
equals the input's.
"""
from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import yaml

from curate.images import decode as decode_image
from curate.io import members as sample_members
from curate.io import checksums, storage, tars
from curate.io.manifest import ManifestError
from curate.io.rundir import RunDir

IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif"}


def caption_policy(run: RunDir) -> str:
    """output.caption_policy of the recipe the run was made with (the default where recipe.yaml does not say)."""
    try:
        recipe = yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return sample_members.DEFAULT_POLICY
    policy = ((recipe.get("output") if isinstance(recipe, dict) else None) or {}).get("caption_policy")
    return policy if policy in sample_members.CAPTION_POLICIES else sample_members.DEFAULT_POLICY


def _check_text(where: str, row: dict, members: dict[str, bytes], policy: str) -> list[str]:
    """The sample's text members and json caption_source against what the caption policy says they hold."""
    problems = []
    expect = sample_members.text_members(row, policy)
    for ext, text in expect.items():
        if ext not in members:
            problems.append(f"{where}: no .{ext} member")
        elif members[ext].decode("utf-8", "replace") != text:
            col = sample_members.text_column(row, ext, policy)
            problems.append(f"{where}: .{ext} differs from meta {col} (caption_policy {policy})")
    for ext in sorted(set(members) & set(sample_members.EXTRA_TEXT_MEMBERS.values()) - set(expect)):
        problems.append(f"{where}: .{ext} member, which caption_policy {policy} does not write")
    return problems


def _check_extras(where: str, row: dict, members: dict[str, bytes]) -> list[str]:
    """The input sample's other members (label, mask: `input_extra_members`) are in the output, whole."""
    refs = row.get("input_extra_members")
    if not refs:
        return []
    problems = []
    refs = json.loads(refs)
    for (ext, _, length), out in zip(refs, sample_members.extra_exts([r[0] for r in refs])):
        if out not in members:
            problems.append(f"{where}: no .{out} member (the input sample's .{ext})")
        elif len(members[out]) != length:
            problems.append(f"{where}: .{out} is {len(members[out])} bytes, the input's .{ext} was {length}")
    return problems


def _missing_line(shard: str, keys: list[str]) -> str:
    """One line for the kept samples a shard lacks: a shard emptied or cut short loses hundreds at once."""
    if len(keys) == 1:
        return f"{shard}: kept sample {keys[0]} is missing from the tar"
    return f"{shard}: {len(keys)} kept samples are missing from the tar (e.g. {keys[0]})"


def _stray_line(shard: str, keys: list[str]) -> str:
    """One line for a shard's samples that no kept metadata row names: a shard copied in from another run
    holds hundreds, and a line each buried every other finding."""
    if len(keys) == 1:
        return f"{shard}: member {keys[0]} has no kept metadata row"
    return f"{shard}: {len(keys)} samples have no kept metadata row (e.g. {keys[0]})"


class ShardRead(NamedTuple):
    """One shard as validate reads it: its file members by key then extension, how many, its SHA-256 (None
    when its bytes could not be read to the end) and the tar's error (None when it read whole)."""
    members: dict[str, dict[str, bytes]]
    count: int
    digest: str | None
    error: str | None


def read_shard(path) -> ShardRead:
    """Walk a shard's tar members and hash its bytes in the same single read.

    The tar is read as a stream (tarfile's r|*), so every byte passes the hashing reader once, in order;
    hashing it in a pass of its own read each shard twice, which on an object store is twice the requests
    and the transfer. The digest is still taken when the tar breaks off, so a damaged shard is reported as
    changed as well as unreadable."""
    members: dict[str, dict[str, bytes]] = defaultdict(dict)
    count, error = 0, None
    try:
        f = storage.as_path(path).open("rb")
    except OSError as err:
        return ShardRead(members, 0, None, str(err))
    with f:
        reader = checksums.HashingReader(f)
        try:
            with tarfile.open(fileobj=reader, mode="r|*", tarinfo=tars.header_recorder()) as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
                    members[key][ext] = tar.extractfile(m).read()
                    count += 1
                tars.check(tar, str(path))  # a shard cut at a member boundary read as a shorter one
        except (tarfile.TarError, OSError, EOFError, tars.TruncatedTar) as err:
            error = str(err)
        try:
            digest = reader.hexdigest()
        except OSError:
            digest = None
    return ShardRead(members, count, digest, error)


def validate(out: str | Path, decode: bool = True, max_problems: int = 50) -> tuple[list[str], dict]:
    """Return (problems, stats); no problems means the run is consistent."""
    storage.preflight(out)  # an unreachable store or missing bucket is one line (StorageError), not a problem list
    run = RunDir(out)
    problems: list[str] = []
    if not run.exists():
        return [f"{run.root}: no manifest.json (not a curate run directory)"], {}
    try:
        manifest = run.load_manifest()
    except ManifestError as err:
        return [str(err)], {}
    if not manifest.complete:
        problems.append(f"run status is {manifest.status!r}, not 'complete' (finish it with --resume)")
    policy = caption_policy(run)
    parts = storage.glob(run.meta, "part-*.parquet")
    if not parts:
        return problems + ["no metadata parts"], {}
    problems += run.parts_problems(manifest, {p.name for p in parts})
    meta = storage.dataset(parts).to_table()
    rows = meta.to_pylist()
    stats = {"rows": len(rows), "kept": 0, "shards": 0, "members": 0}
    uids = defaultdict(int)
    for r in rows:
        uids[r["uid"]] += 1
    dups = [u for u, n in uids.items() if n > 1]
    if dups:
        problems.append(f"{len(dups)} uids appear more than once in meta (e.g. {dups[0]})")
    expected_rows = manifest.input.rows
    # rows a stage derived from an input row (video clips) name it in parent_uid and come on top
    derived = [r for r in rows if r.get("parent_uid") is not None]
    if expected_rows is not None and expected_rows != len(rows) - len(derived):
        problems.append(f"meta holds {len(rows) - len(derived)} input rows but the input had {expected_rows}")
    orphans = [r["uid"] for r in derived if r["parent_uid"] not in uids]
    if orphans:
        problems.append(f"{len(orphans)} derived rows name a parent_uid that is not in meta (e.g. {orphans[0]})")
    kept_by_shard: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["status"] == "ok":
            stats["kept"] += 1
            if not r.get("shard") or not r.get("key"):
                problems.append(f"kept row {r['uid']} has no shard/key")
                continue
            kept_by_shard[r["shard"]][r["key"]] = r
        elif r.get("shard"):
            problems.append(f"{r['status']} row {r['uid']} claims shard {r['shard']}")
    tars = {f"shards/{p.name}": p for p in storage.glob(run.shards, "*.tar")}
    stats["shards"] = len(tars)
    for shard in sorted(set(kept_by_shard) - set(tars)):
        problems.append(f"{shard}: listed in meta but missing")
    digests = run.shard_digests()
    for shard, path in tars.items():
        read = read_shard(path)
        if shard in digests and read.digest is not None and read.digest != digests[shard]:
            problems.append(f"{shard}: its bytes changed since it was written (SHA-256 differs from the one its "
                            "meta part recorded: bit rot, a partial copy or an edit)")
        expect = kept_by_shard.get(shard, {})
        seen = read.members
        stats["members"] += read.count
        if read.error is not None:
            problems.append(f"{shard}: unreadable tar ({read.error})")
            continue
        stray = sorted(set(seen) - set(expect))
        if stray:
            problems.append(_stray_line(shard, stray))
        missing = [key for key in expect if not seen.get(key)]
        if missing:
            problems.append(_missing_line(shard, missing))
        for key, row in expect.items():
            members = seen.get(key)
            if not members:
                continue
            img_ext = [e for e in members if e in IMAGE_EXTS]
            if row.get("image_format") and not img_ext:
                problems.append(f"{shard}/{key}: no image member")
            if row.get("video_format") and row["video_format"] not in members:
                problems.append(f"{shard}/{key}: no .{row['video_format']} member")
            elif row.get("video_format") and decode:
                from curate.video.probe import probe

                bad = probe(members[row["video_format"]])
                if bad.reason:
                    problems.append(f"{shard}/{key}.{row['video_format']}: does not decode ({bad.reason}: {bad.error})")
            problems += _check_text(f"{shard}/{key}", row, members, policy)
            problems += _check_extras(f"{shard}/{key}", row, members)
            if "json" not in members:
                problems.append(f"{shard}/{key}: no .json member")
            else:
                try:
                    info = json.loads(members["json"])
                    if info.get("uid") != row["uid"]:
                        problems.append(f"{shard}/{key}: json uid {info.get('uid')} != meta uid {row['uid']}")
                    source = sample_members.caption_source(row, policy)
                    if info.get("caption_source") != source:
                        problems.append(f"{shard}/{key}: json caption_source {info.get('caption_source')!r}, "
                                        f"caption_policy {policy} says {source!r}")
                except ValueError:
                    problems.append(f"{shard}/{key}: .json is not valid JSON")
            if decode:
                for e in img_ext:
                    try:
                        px = decode_image(members[e])
                        if row.get("width") and (px.shape[1], px.shape[0]) != (row["width"], row["height"]):
                            problems.append(f"{shard}/{key}: image is {px.shape[1]}x{px.shape[0]}, meta says {row['width']}x{row['height']}")
                    except Exception as err:  # noqa: BLE001 - any decode failure is a finding
                        problems.append(f"{shard}/{key}.{e}: does not decode ({err})")
        if len(problems) > max_problems:
            break
    return problems, stats
