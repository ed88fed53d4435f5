"""What the probe keeps of a medium for the shard writer, so no medium is decoded twice.

A recording's clips travel as a *clip pack*: an uncompressed tar of
`meta.json` (source info and, per clip, offset, seconds, level) and the clips'
FLAC bytes.  An image travels as its prepared JPEG.  Both are pure functions of
the medium's bytes and the media settings, kept in the content-addressed cache.
"""
from __future__ import annotations

import io
import json
import tarfile

from bestiary.media.audio import AudioInfo, Clip


def pack_clips(info: AudioInfo, clips: list[Clip]) -> bytes:
    meta = {"sample_rate": info.sample_rate, "channels": info.channels, "frames": info.frames,
            "ultrasonic_share": info.ultrasonic_share, "time_expansion": info.time_expansion,
            "clips": [{"offset_s": c.offset_s, "seconds": c.seconds, "rms_db": c.rms_db,
                       "clipped_fraction": c.clipped_fraction} for c in clips]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        members = [("meta.json", json.dumps(meta, sort_keys=True).encode())]
        members += [(f"{i:03d}.flac", c.flac) for i, c in enumerate(clips)]
        for name, body in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(body), 0
            tar.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


def unpack_clips(data: bytes) -> tuple[AudioInfo, list[Clip]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        meta = json.loads(tar.extractfile("meta.json").read())
        flacs = [tar.extractfile(f"{i:03d}.flac").read() for i in range(len(meta["clips"]))]
    info = AudioInfo(meta["sample_rate"], meta["channels"], meta["frames"], meta.get("ultrasonic_share", 0.0),
                     meta.get("time_expansion", 1))
    return info, [Clip(c["offset_s"], c["seconds"], f, c["rms_db"], c["clipped_fraction"])
                  for c, f in zip(meta["clips"], flacs)]
