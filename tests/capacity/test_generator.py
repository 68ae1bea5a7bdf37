"""The bench's synthetic referral discs: valid DICOM of every kind (dciodvfy),
real ISO images pdimport reads, the mix's shares kept, broken files and
scratches where the mix asks for them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pycdlib
import pydicom
import pytest
from fixtures_dicom import dciodvfy_errors
from pydicom.uid import generate_uid

from pdimport.capacity import generator
from pdimport.capacity import mix as mixmod
from pdimport.demo.sample import SampleStudy
from pdimport.settings import defaults

TINY = Path(__file__).with_name("tiny-mix.toml")

#: Every modality in every syntax the mix file offers (RT: its own three objects).
KINDS = [
    (modality, syntax)
    for modality in ("CT", "MR", "CR", "US")
    for syntax in mixmod.SYNTAXES
    if not (modality == "US" and syntax in ("j2k", "jpegls"))  # the mix refuses these
] + [("RT", "explicit")]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], list[Path]]:
    folder = tmp_path_factory.mktemp("kinds")
    frames = generator.FrameCache(3)
    study = SampleStudy(PatientID="GEN1", PatientName="BENCH^GEN")
    StudyInstanceUID = generate_uid()
    ct: list[pydicom.Dataset] = []
    out: dict[tuple[str, str], list[Path]] = {}
    for modality, syntax in [("CT", "explicit"), *KINDS]:
        size = {"CR": 128, "US": 64, "RT": 32}.get(modality, 64)
        spec = mixmod.SeriesSpec(modality, 2, size, syntax)
        paths = []
        for i, ds in enumerate(
            generator.series_datasets(spec, study, StudyInstanceUID, frames, ct)
        ):
            path = folder / f"{modality}-{syntax}-{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            if modality == "CT":
                ct.append(ds)
            paths.append(path)
        out[(modality, syntax)] = paths
    return out


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="needs dicom3tools dciodvfy")
@pytest.mark.parametrize(("modality", "syntax"), KINDS, ids=[f"{m}-{s}" for m, s in KINDS])
def test_every_kind_is_valid_dicom(samples, modality: str, syntax: str) -> None:
    paths = samples[(modality, syntax)]
    assert paths
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name
        ds = pydicom.dcmread(path)
        if modality != "RT" or ds.Modality == "RTDOSE":
            assert ds.pixel_array.size > 0  # decodes, whatever the syntax
    if modality == "RT":
        assert [pydicom.dcmread(p).Modality for p in paths] == ["RTSTRUCT", "RTPLAN", "RTDOSE"]
    else:
        assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == mixmod.SYNTAXES[syntax]


def test_compressed_frames_compress_like_real_images(samples) -> None:
    """Noisy phantoms: lossless codecs get 1.5-6:1, not the 20:1 of flat shapes."""
    native = len(pydicom.dcmread(samples[("CT", "explicit")][0]).PixelData)
    for syntax in ("j2k", "rle", "jpeg_lossless", "jpegls"):
        packed = len(pydicom.dcmread(samples[("CT", syntax)][0]).PixelData)
        assert 1.2 < native / packed < 6, (syntax, native / packed)


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> list[generator.DiscInfo]:
    mix = mixmod.load(TINY)
    return generator.ensure_discs(mix, 6, tmp_path_factory.mktemp("discs"))


def test_discs_are_pdi_isos_that_pdimport_reads(discs) -> None:
    from pdimport.media import IsoMedium

    assert {d.kind for d in discs} == {"ct_mr", "cr_us", "ct_j2k_rt", "ct_rle_jpegls"}
    for disc in discs:
        iso = pycdlib.PyCdlib()
        iso.open(disc.path)
        try:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/DICOMDIR")
            records = pydicom.dcmread(io.BytesIO(buf.getvalue())).DirectoryRecordSequence
            images = [r for r in records if "ReferencedFileID" in r]
            assert len(images) == disc.dicom, disc.kind
            assert iso.get_record(rr_path="/README.TXT") is not None
        finally:
            iso.close()
        medium = IsoMedium(disc.path, defaults())
        try:
            assert len(medium.entries()) == disc.files, disc.kind
            assert medium.label == disc.label
        finally:
            medium.close()


def test_broken_files_and_scratches_as_the_mix_asks(discs) -> None:
    broken = next(d for d in discs if d.kind == "ct_j2k_rt")
    assert broken.broken == 3 and len(broken.bad_lbas) == 1
    sidecar = Path(broken.path + ".bad-lbas")
    assert sidecar.read_text() == str(broken.bad_lbas[0])
    assert 0 < broken.bad_lbas[0] < broken.bytes // 2048
    clean = next(d for d in discs if d.kind == "ct_mr")
    assert clean.broken == 0 and not Path(clean.path + ".bad-lbas").exists()


def test_each_disc_has_fresh_uids_and_the_cache_keeps_them(discs, tmp_path: Path) -> None:
    labels = {d.label for d in discs}
    assert len(labels) == len(discs)
    again = generator.ensure_discs(mixmod.load(TINY), len(discs), Path(discs[0].path).parents[1])
    assert [d.path for d in again] == [d.path for d in discs]  # made once, found again


def test_the_default_mix_ships_and_keeps_its_shares() -> None:
    mix = mixmod.load()
    assert mix.source == "default" and len(mix.kinds) >= 6
    cd = mix.for_profile("cd")
    assert {k.media for k in cd.kinds} == {"cd"}
    assert {k.media for k in mix.for_profile("bd").kinds} == {"cd", "dvd", "bd"}
    plan = cd.plan(160)
    for name, share in cd.shares().items():
        assert abs(sum(k.name == name for k in plan) / 160 - share) < 0.01, name
    assert plan[:20] == cd.plan(20)  # a longer run starts with the same discs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[kind]]\nname='a'\nseries=[{modality='PET'}]", "modality"),
        ("[[kind]]\nname='a'\nseries=[{modality='CT', syntax='jpeg2'}]", "syntax"),
        ("[[kind]]\nname='a'\nshare=0\nseries=[{modality='CT'}]", "share"),
        ("[[kind]]\nname='a'\nseries=[{modality='RT'}]", "RT set"),
        ("[[kind]]\nname='a'\nseries=[{modality='US', syntax='j2k'}]", "US in j2k"),
        ("[[kind]]\nname='a'\ncolour=1\nseries=[{modality='CT'}]", "unknown key"),
        ("seed = 1", "no \\[\\[kind\\]\\]"),
        ("[[kind", "not TOML"),
    ],
)
def test_a_bad_mix_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(mixmod.MixError, match=message):
        mixmod.parse(text, "test.toml")
