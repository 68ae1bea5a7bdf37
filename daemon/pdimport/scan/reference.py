"""Reference table every header scanner must match (like pydicom's
``tests/pixels/pixels_reference.py``).

Each row names a file bundled with pydicom (``test_files/`` or
``charset_files/``) and gives what a scanner returns for it: the encoding
:func:`~pdimport.scan.encoding.detect_encoding` sees (None = not DICOM), and
either the expected :class:`~pdimport.model.Header` values or the expected
problem code. The values were checked against pydicom ``dcmread`` (the
oracle, see tests/test_scan.py) and, for the charset files, against the
examples of PS3.5 Annex H/I/J.

A new backend (numba) is correct when ``tests/test_scan.py`` passes with it
for every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reference:
    """One reference file and its expected scan result."""

    name: str  # pydicom bundled file name
    encoding: str | None  # what detect_encoding says; None = not DICOM
    values: dict[str, object] = field(default_factory=dict)  # Header field -> value
    problem: str = ""  # expected problem code instead of a Header


REFERENCE: tuple[Reference, ...] = (
    Reference(
        "CT_small.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
            "patient_id": "1CT1",
            "patient_name": "CompressedSamples^CT1",
            "study_uid": "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
            "series_uid": "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",
            "modality": "CT",
            "specific_character_set": "ISO_IR 100",
        },
    ),
    Reference(
        "MR_small.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
            "patient_id": "4MR1",
            "patient_name": "CompressedSamples^MR1",
            "study_uid": "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457",
            "series_uid": "1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457",
            "modality": "MR",
            "specific_character_set": "",
        },
    ),
    Reference(
        "MR_small_implicit.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
            "patient_id": "4MR1",
            "patient_name": "CompressedSamples^MR1",
            "study_uid": "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457",
            "series_uid": "1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457",
            "modality": "MR",
            "specific_character_set": "",
        },
    ),
    Reference(
        "MR_small_bigendian.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.2",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
            "patient_id": "4MR1",
            "patient_name": "CompressedSamples^MR1",
            "study_uid": "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457",
            "series_uid": "1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457",
            "modality": "MR",
            "specific_character_set": "",
        },
    ),
    Reference(
        "MR_small_RLE.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.5",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
            "patient_id": "4MR1",
            "patient_name": "CompressedSamples^MR1",
            "study_uid": "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457",
            "series_uid": "1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457",
            "modality": "MR",
            "specific_character_set": "",
        },
    ),
    Reference(
        "JPEG2000.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.4.91",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.8.1.3.20040826185059.5457",
            "patient_id": "8NM1",
            "patient_name": "CompressedSamples^NM1",
            "study_uid": "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457",
            "series_uid": "1.3.6.1.4.1.5962.1.3.8.1.20040826185059.5457",
            "modality": "NM",
            "specific_character_set": "",
        },
    ),
    Reference(
        "ExplVR_BigEndNoMeta.dcm",
        "explicit_be",
        {
            "transfer_syntax": "1.2.840.10008.1.2.2",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.481.8",
            "sop_instance_uid": "1.2.333.4444.5.6.7.8",
            "patient_id": "",
            "patient_name": "",
            "study_uid": "1.2.333.4444.5.6.7.8.9",
            "series_uid": "1.2.333.4444.5.6.7.8.99",
            "modality": "RTPLAN",
            "specific_character_set": "ISO_IR 100",
        },
    ),
    Reference(
        "ExplVR_LitEndNoMeta.dcm",
        "explicit_le",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.481.8",
            "sop_instance_uid": "1.2.333.4444.5.6.7.8",
            "patient_id": "",
            "patient_name": "",
            "study_uid": "1.2.333.4444.5.6.7.8.9",
            "series_uid": "1.2.333.4444.5.6.7.8.99",
            "modality": "RTPLAN",
            "specific_character_set": "ISO_IR 100",
        },
    ),
    Reference(
        "rtstruct.dcm",
        "implicit_le",
        {
            "transfer_syntax": "1.2.840.10008.1.2",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.481.3",
            "sop_instance_uid": "1.2.826.0.1.3680043.8.498.2010020400001",
            "patient_id": "tPhantom30sep",
            "patient_name": "Test^Phantom30sep",
            "study_uid": "1.2.826.0.1.3680043.8.498.2010020400001.1",
            "series_uid": "1.2.826.0.1.3680043.8.498.2010020400001.1.1",
            "modality": "RTSTRUCT",
            "specific_character_set": "ISO_IR 100",
        },
    ),
    Reference(
        "image_dfl.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1.99",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.0.0.0.977067309.6001.0",
            "patient_id": "",
            "patient_name": "^^^^",
            "study_uid": "1.3.6.1.4.1.5962.1.2.0.977067310.6001.0",
            "series_uid": "1.3.6.1.4.1.5962.1.3.0.0.977067310.6001.0",
            "modality": "OT",
            "specific_character_set": "",
        },
    ),
    Reference(
        "MR_small_padded.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457",
            "patient_id": "4MR1",
            "patient_name": "CompressedSamples^MR1",
            "study_uid": "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457",
            "series_uid": "1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457",
            "modality": "MR",
            "specific_character_set": "",
            "warnings": ["pixel_length_excess"],
        },
    ),
    Reference(
        "SC_ybr_full_422_uncompressed.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.2.276.0.7230010.3.1.4.8323329.5846.1512159596.457896",
            "patient_id": "ID1",
            "patient_name": "Lestrade^G",
            "study_uid": "1.2.826.0.1.3680043.8.498.12406831542731051035295345080039845114",
            "series_uid": "1.2.826.0.1.3680043.8.498.16157229083793556332623330502397121062",
            "modality": "OT",
            "specific_character_set": "ISO_IR 192",
        },
    ),
    Reference(
        "test-SR.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.33",
            "sop_instance_uid": "1.2.276.0.7230010.3.1.4.2139363186.7819.982086466.4",
            "patient_id": "",
            "patient_name": "Test^S R",
            "study_uid": "1.2.276.0.7230010.3.1.4.2139363186.7819.982086466.2",
            "series_uid": "1.2.276.0.7230010.3.1.4.2139363186.7819.982086466.3",
            "modality": "SR",
            "specific_character_set": "ISO_IR 100",
        },
    ),
    Reference(
        "waveform_ecg.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.9.1.1",
            "sop_instance_uid": "1.3.6.1.4.1.20029.40.20130125105919.5407.1.1",
            "patient_id": "642341",
            "patient_name": "Anonymous",
            "study_uid": "1.3.76.13.65829.2.20130125082826.1072139.2",
            "series_uid": "1.3.6.1.4.1.20029.40.20130125105919.5407.1",
            "modality": "ECG",
            "specific_character_set": "ISO_IR 100",
        },
    ),
    Reference(
        "chrH31.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.0.1.1.1175775771.5702.0",
            "patient_id": "H31EXAMPLE",
            "patient_name": "Yamada^Tarou=山田^太郎=やまだ^たろう",
            "study_uid": "1.3.6.1.4.1.5962.1.2.0.1175775771.5702.0",
            "series_uid": "1.3.6.1.4.1.5962.1.3.0.1.1175775771.5702.0",
            "modality": "OT",
            "specific_character_set": "\\ISO 2022 IR 87",
        },
    ),
    Reference(
        "chrH32.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.0.1.1.1175775771.5705.0",
            "patient_id": "H32EXAMPLE",
            "patient_name": "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
            "study_uid": "1.3.6.1.4.1.5962.1.2.0.1175775771.5705.0",
            "series_uid": "1.3.6.1.4.1.5962.1.3.0.1.1175775771.5705.0",
            "modality": "OT",
            "specific_character_set": "ISO 2022 IR 13\\ISO 2022 IR 87",
        },
    ),
    Reference(
        "chrX1.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.0.1.1.1175775771.5711.0",
            "patient_id": "X1EXAMPLE",
            "patient_name": "Wang^XiaoDong=王^小東",
            "study_uid": "1.3.6.1.4.1.5962.1.2.0.1175775771.5711.0",
            "series_uid": "1.3.6.1.4.1.5962.1.3.0.1.1175775771.5711.0",
            "modality": "OT",
            "specific_character_set": "ISO_IR 192",
        },
    ),
    Reference(
        "chrI2.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.0.1.1.1175775771.5708.0",
            "patient_id": "I2EXAMPLE",
            "patient_name": "Hong^Gildong=洪^吉洞=홍^길동",
            "study_uid": "1.3.6.1.4.1.5962.1.2.0.1175775771.5708.0",
            "series_uid": "1.3.6.1.4.1.5962.1.3.0.1.1175775771.5708.0",
            "modality": "OT",
            "specific_character_set": "\\ISO 2022 IR 149",
        },
    ),
    Reference(
        "chrX2.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.3.6.1.4.1.5962.1.1.0.1.1.1175775771.5714.0",
            "patient_id": "X2EXAMPLE",
            "patient_name": "Wang^XiaoDong=王^小东",
            "study_uid": "1.3.6.1.4.1.5962.1.2.0.1175775771.5714.0",
            "series_uid": "1.3.6.1.4.1.5962.1.3.0.1.1175775771.5714.0",
            "modality": "OT",
            "specific_character_set": "GB18030",
        },
    ),
    Reference("MR_truncated.dcm", "part10", problem="truncated"),
    Reference("rtplan_truncated.dcm", "part10", problem="truncated"),
    Reference(
        # JPEG Baseline declared over an implicit VR body: read as pydicom
        # and dcmtk read it, sent re-encoded in explicit VR.
        "SC_rgb_jpeg.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2.4.50",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
            "sop_instance_uid": "1.2.826.0.1.3680043.8.498.13002811185086637637347356263722492924",
            "study_uid": "1.2.826.0.1.3680043.8.498.13331179108403236084039838123417806584",
            "modality": "OT",
            "warnings": ["vr_form_mismatch"],
        },
    ),
    Reference("meta_missing_tsyntax.dcm", "part10", problem="bad_file_meta"),
    Reference(
        # Its File Meta names another SOP Instance UID than its dataset:
        # a PACS stores it, so it is delivered with a warning.
        "rtplan.dcm",
        "part10",
        {
            "transfer_syntax": "1.2.840.10008.1.2",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.481.5",
            "sop_instance_uid": "1.2.777.777.77.7.7777.7777.20030903150023",
            "patient_id": "id00001",
            "modality": "RTPLAN",
            "warnings": ["uid_mismatch"],
        },
    ),
    Reference("UN_sequence.dcm", "part10", problem="missing_attribute"),
    Reference("no_meta.dcm", None),
    Reference("README.txt", None),
)

#: Reference rows by file name.
BY_NAME: dict[str, Reference] = {r.name: r for r in REFERENCE}
