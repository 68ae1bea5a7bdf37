"""A directory loop or a bad directory extent costs the entries below it,
not the disc (issue 17, item 5).

Images are mastered by genisoimage / xorriso and then patched: the extent of
one sub-directory (``A/B``) is pointed back at the root, or far past the end
of the image, in every volume descriptor's tree (ISO 9660 and Joliet), so
pycdlib refuses the image as a whole and the tolerant walker must list it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from fixtures_media import make_iso, sha256
from pydicom import dcmread

from pdimport.cli import main
from pdimport.media import IsoMedium, MediumOpenError, open_medium

S = 2048


def _records(data: bytes, lba: int, size: int):
    """(offset, identifier, flags) of the records of one directory (ECMA-119 §9.1)."""
    pos, end = lba * S, lba * S + size
    while pos < end:
        length = data[pos]
        if length == 0:
            pos = (pos // S + 1) * S
            continue
        yield pos, bytes(data[pos + 33 : pos + 33 + data[pos + 32]]), data[pos + 25]
        pos += length


def _both(data: bytearray, offset: int, value: int) -> None:
    struct.pack_into("<I", data, offset, value)  # both-endian field (ECMA-119 §7.3.3)
    struct.pack_into(">I", data, offset + 4, value)


def patch_subdir(image: Path, mode: str) -> int:
    """Point ``A/B``'s extent at the root (``loop``) or past the end (``bad``)
    in every volume descriptor's tree; returns how many trees were patched."""
    data = bytearray(image.read_bytes())
    patched = 0
    for sector in range(16, 32):
        desc = data[sector * S : (sector + 1) * S]
        if desc[1:6] != b"CD001" or desc[0] not in (1, 2):
            continue
        root_lba, root_size = (
            struct.unpack_from("<I", desc, 158)[0],
            struct.unpack_from("<I", desc, 166)[0],
        )
        for pos, ident, flags in _records(data, root_lba, root_size):
            if flags & 2 and ident.replace(b"\0", b"") == b"A":
                a_lba, a_size = (
                    struct.unpack_from("<I", data, pos + 2)[0],
                    struct.unpack_from("<I", data, pos + 10)[0],
                )
                for p2, i2, f2 in _records(data, a_lba, a_size):
                    if f2 & 2 and i2.replace(b"\0", b"") == b"B":
                        _both(data, p2 + 2, root_lba if mode == "loop" else 10_000_000)
                        if mode == "loop":
                            _both(data, p2 + 10, root_size)
                        patched += 1
    image.write_bytes(bytes(data))
    return patched


def _disc(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Three CT images at the root, one below A, two below A/B (lost)."""
    src = tmp_path / "src"
    images = make_ct_series(tmp_path / "ct", 6, patient_id="LOOP")
    layout = ["IM1", "IM2", "IM3", "A/IM4", "A/B/IM5", "A/B/IM6"]
    files = {}
    for name, image in zip(layout, images):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(image.read_bytes())
        files[name] = image.read_bytes()
    return src, files


VARIANTS = {
    "iso9660": {"joliet": False, "rockridge": False},
    "joliet": {"joliet": True, "rockridge": False},
    "rockridge": {"joliet": False, "rockridge": True},
    "xorriso": {"tool": "xorriso", "joliet": True, "rockridge": True},
}


@pytest.mark.parametrize("mode", ["loop", "bad"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_damaged_subdirectory_costs_only_its_entries(tmp_path, media_settings, variant, mode):
    src, files = _disc(tmp_path)
    image = make_iso(src, tmp_path / "disc.iso", **VARIANTS[variant])
    assert patch_subdir(image, mode) == (2 if VARIANTS[variant]["joliet"] else 1)
    with pytest.raises(MediumOpenError):  # pycdlib alone gives up on the whole disc
        IsoMedium(str(image), media_settings, tolerant=False)
    medium = open_medium(str(image), media_settings)
    try:
        assert [(p.code, p.path) for p in medium.problems] == [("directory_loop", "A/B")]
        got = {}
        for entry in medium.entries():
            with medium.open(entry) as fp:
                got[entry.path] = sha256(fp.read())
        assert got == {k: sha256(v) for k, v in files.items() if not k.startswith("A/B/")}
    finally:
        medium.close()


def test_directory_loop_on_a_disc_is_imported_partially(tmp_path, state, storescp, capsys):
    src, files = _disc(tmp_path)
    image = make_iso(src, tmp_path / "disc.iso")
    patch_subdir(image, "loop")
    scp = storescp()
    rc = main(["import", str(image), "--dest", scp.url, "--state-dir", str(state), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert (rc, rep["status"]) == (1, "partial")
    assert [(p["code"], p["path"]) for p in rep["problems"]] == [("directory_loop", "A/B")]
    sent = {str(dcmread(p).SOPInstanceUID) for p in scp.files()}
    intact = [src / k for k in files if not k.startswith("A/B/")]  # IM1-IM3 and A/IM4
    assert sent == {str(dcmread(p).SOPInstanceUID) for p in intact} and len(sent) == 4
