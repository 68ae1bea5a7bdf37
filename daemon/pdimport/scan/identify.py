"""What is this file? DICOM by its bytes, other content by its magic number,
the rest by where it sits on the medium.

Real discs name DICOM files anything (``IM_0001``, ``00000001``, ``.DCM``,
``.dic``, no extension), so names never make a file DICOM; they only make a
file that is *not* DICOM suspicious (``broken``/``not_dicom``). Names do
decide what is ignored: viewer software, autorun files, the IHE PDI web
content (IHE RAD TF-2 §4.47.4.1.2) and operating-system litter.

Only a small prefix of each file is read.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pdimport.model import Identity
from pdimport.problems import FileProblem, Problem
from pdimport.scan.encoding import detect_encoding, read_file_meta

log = logging.getLogger(__name__)

#: Media Storage Directory Storage SOP Class (PS3.4 Annex B, PS3.10 §8.6).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PREFIX_SIZE = 1 << 16  # enough for any File Meta and any magic number

#: Viewer software shipped on discs (PE, ELF, Mach-O, Java, installers,
#: drivers, scripts): ignored wherever it sits.
EXECUTABLE_EXTENSIONS = frozenset(
    {
        "exe",
        "dll",
        "msi",
        "jar",
        "so",
        "dylib",
        "ocx",
        "cab",
        "inf",
        "sys",
        "scr",
        "cpl",
        "drv",
        "class",
        "dmg",
        "pkg",
        "lnk",
        "bat",
        "cmd",
        "com",
        "vbs",
        "ps1",
    }
)
#: Folder names that hold viewer programs on real discs.
_VIEWER_DIR = re.compile(
    r"(.*viewer.*|bin|program|programs|program files|programfiles|app|apps|application|"
    r"jre|jvm|java|lib|libs|plugins?|runtime|platforms|imageformats|x86|x64|win32|win64|"
    r"macos|osx|linux|tools|setup|install|installer|redist|vcredist|.*\.app)",
    re.IGNORECASE,
)
_OS_JUNK_NAMES = frozenset(
    {".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", ".localized", "icon\r", ".directory"}
)
_OS_JUNK_DIRS = frozenset(
    {
        "__macosx",
        "system volume information",
        "$recycle.bin",
        "recycler",
        ".spotlight-v100",
        ".trashes",
        ".fseventsd",
        ".temporaryitems",
        ".trash-1000",
    }
)
_AUTORUN_NAMES = frozenset(
    {"autorun.inf", "autorun.exe", "run.bat", "autorun.bat", "autorun.ico", "autorun.sh", "autorun"}
)
_WEB_ROOT_NAMES = frozenset({"index.htm", "index.html"})
_PDI_INFO_NAMES = frozenset({"readme.txt", "readme"})
_DICOM_EXTENSIONS = frozenset({"dcm", "dic", "dicom", "dcm30", "ima"})
_DICOM_DIRS = frozenset({"dicom", "dicomdir"})


@dataclass(frozen=True)
class MediumContext:
    """What identification may know about the rest of the medium.

    ``viewer_dirs``: folders ('/'-joined, "" = root) that hold a viewer
    executable; ``dicomdir_paths``: medium paths named in a DICOMDIR
    (normalised with :func:`normalise_path`).
    """

    viewer_dirs: frozenset[str] = frozenset()
    dicomdir_paths: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Name:
    """A display path split into normalised parts (ISO 9660 ';1' and the
    trailing '.' of an empty extension removed, case folded)."""

    parts: tuple[str, ...]
    folders: tuple[str, ...] = field(default=())

    @property
    def base(self) -> str:
        return self.parts[-1] if self.parts else ""

    @property
    def ext(self) -> str:
        base = self.base
        return base.rsplit(".", 1)[1] if "." in base.lstrip(".") else ""

    @property
    def at_root(self) -> bool:
        return len(self.parts) == 1

    @property
    def folder(self) -> str:
        return "/".join(self.parts[:-1])


_ISO_VERSION = re.compile(r";\d*$")


def normalise_component(part: str) -> str:
    """One medium name as matching wants it: ISO 9660 version (';1') and the
    dot of an empty extension ('IM1.') dropped (ECMA-119 §7.5), case folded."""
    if ";" in part:
        part = _ISO_VERSION.sub("", part)
    if part.endswith(".") and part not in (".", ".."):
        part = part.rstrip(".")
    return part.casefold()


def normalise_path(path: str) -> str:
    return "/".join(normalise_component(p) for p in path.replace("\\", "/").split("/") if p)


def _name(display_path: str) -> _Name:
    parts = tuple(normalise_component(p) for p in display_path.replace("\\", "/").split("/") if p)
    return _Name(parts, parts[:-1])


def medium_context(paths: Iterable[str], dicomdir_paths: Iterable[str] = ()) -> MediumContext:
    """Build the :class:`MediumContext` of a medium from its file list."""
    viewer_dirs = set()
    for p in paths:
        # only the last part decides whether the rest matters (10,000 names: 30 ms)
        last = normalise_component(p.replace("\\", "/").rstrip("/").rpartition("/")[2])
        if "." not in last.lstrip(".") or last.rsplit(".", 1)[1] not in EXECUTABLE_EXTENSIONS:
            continue
        n = _name(p)
        if n.ext in EXECUTABLE_EXTENSIONS and n.base not in _AUTORUN_NAMES:
            viewer_dirs.add(n.folder)
    return MediumContext(
        frozenset(viewer_dirs), frozenset(normalise_path(p) for p in dicomdir_paths)
    )


# ------------------------------------------------------------------- rules
def identify(display_path: str, local: Path, context: MediumContext | None = None) -> Identity:
    """Identify one spooled file.

    Parameters
    ----------
    display_path : str
        The '/'-separated path on the medium (a label; never opened).
    local : Path
        The spooled copy (the bytes are hostile; only a prefix is read).
    context : MediumContext, optional
        Viewer folders and DICOMDIR-named paths of the same medium.

    Returns
    -------
    Identity
        See :class:`~pdimport.model.Identity`.
    """
    ctx = context or MediumContext()
    name = _name(display_path)
    ignored = _ignored_by_name(name)
    if ignored:
        return Identity("ignored", ignored)
    try:
        with open(local, "rb") as fp:
            prefix = fp.read(PREFIX_SIZE)
            size = os.fstat(fp.fileno()).st_size
    except OSError as exc:
        return Identity("broken", problem=Problem("unreadable_sector", display_path, str(exc)))
    if not prefix:
        return Identity("broken", problem=Problem("empty_file", display_path))
    encoding = detect_encoding(prefix, size)
    if encoding is not None:
        return _dicom_identity(name, prefix, encoding)
    if any(_VIEWER_DIR.fullmatch(f) for f in name.folders):
        return Identity("ignored", "viewer")  # icons, manuals, data files of the viewer
    content = sniff_content(prefix, name.ext)
    if content:
        return Identity("other_content", content)
    if _claims_dicom(name, ctx):
        return Identity(
            "broken",
            problem=Problem(
                "not_dicom", display_path, "named or placed as DICOM but the bytes are not DICOM"
            ),
        )
    if _beside_executable(name, ctx):
        return Identity("ignored", "viewer")
    return Identity(
        "unknown",
        problem=Problem("unsupported_content", display_path, "not a recognised file type"),
    )


def ignored_by_name(display_path: str) -> str:
    """The ``ignored`` subtype a file gets by its name and place alone
    (no byte read), or "": what :func:`identify` decides first."""
    return _ignored_by_name(_name(display_path))


def _ignored_by_name(name: _Name) -> str:
    """The ``ignored`` subtype decided by name and place alone, or ""."""
    if not name.parts:
        return ""
    base = name.base
    if (
        base in _OS_JUNK_NAMES
        or base.startswith("._")
        or any(f in _OS_JUNK_DIRS for f in name.folders)
    ):
        return "os_junk"
    if any(f == "ihe_pdi" for f in name.folders):
        return "ihe_pdi_web"  # IHE RAD TF-2 §4.47.4.1.2: web-viewable content
    if name.at_root:
        if base in _AUTORUN_NAMES:
            return "autorun"
        if base in _WEB_ROOT_NAMES:
            return "ihe_pdi_web"
        if base in _PDI_INFO_NAMES:
            return "pdi_info"
    if name.ext in EXECUTABLE_EXTENSIONS or any(f.endswith(".app") for f in name.folders):
        return "viewer"
    return ""


def _beside_executable(name: _Name, ctx: MediumContext) -> bool:
    """An unrecognised file in (or below) a folder that holds a viewer
    executable. Recognised content there (a PDF, a JPEG) is kept: it may be
    a clinical report next to a viewer at the disc root."""
    folder = name.folder
    return any(folder == d or (d and folder.startswith(d + "/")) for d in ctx.viewer_dirs)


def _claims_dicom(name: _Name, ctx: MediumContext) -> bool:
    """Name or place says DICOM: a DICOM extension, a DICOM/ folder (IHE PDI
    and most burners), the name DICOMDIR, or a DICOMDIR record naming it."""
    if name.ext in _DICOM_EXTENSIONS or name.base == "dicomdir":
        return True
    if any(f in _DICOM_DIRS for f in name.folders):
        return True
    return "/".join(name.parts) in ctx.dicomdir_paths


def _dicom_identity(name: _Name, prefix: bytes, encoding: str) -> Identity:
    """``dicom`` or ``dicomdir`` (PS3.10 §8.6: a DICOMDIR is the file whose
    Media Storage SOP Class is the Media Storage Directory Storage)."""
    sop_class = ""
    meta_offset = 132 if encoding == "part10" else 0
    if encoding == "part10" or prefix[:2] == b"\x02\x00":
        try:
            meta, _ = read_file_meta(prefix, meta_offset)
            sop_class = meta.get("MediaStorageSOPClassUID", "")
        except FileProblem:
            pass  # the scanner reports the bad meta with its code
    if sop_class == DICOMDIR_SOP_CLASS:
        return Identity("dicomdir", encoding)
    if name.base == "dicomdir" and _starts_with_group_0004(prefix, encoding):
        return Identity("dicomdir", encoding)
    return Identity("dicom", encoding)


def _starts_with_group_0004(prefix: bytes, encoding: str) -> bool:
    """A meta-less dataset whose first element is in the Directory
    Information group 0x0004 (PS3.3 F.3.2)."""
    if encoding == "explicit_be":
        return prefix[:2] == b"\x00\x04"
    if encoding in ("implicit_le", "explicit_le"):
        return prefix[:2] == b"\x04\x00"
    return False


# ------------------------------------------------------------ magic bytes
def sniff_content(prefix: bytes, ext: str = "") -> str:
    """Clinical non-DICOM content by magic number: ``pdf``, ``jpeg``,
    ``png``, ``tiff``, ``bmp``, ``txt``; "" when none matches."""
    if b"%PDF-" in prefix[:1024]:
        return "pdf"  # readers accept up to 1 KiB of junk before the header
    if prefix[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if prefix[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if prefix[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if _is_bmp(prefix):
        return "bmp"
    if ext == "txt" and _is_text(prefix):
        return "txt"
    return ""


def _is_bmp(prefix: bytes) -> bool:
    """'BM' plus a BITMAPINFOHEADER-family size (12, 40, 52, 56, 64, 108, 124)."""
    if len(prefix) < 18 or prefix[:2] != b"BM":
        return False
    dib = int.from_bytes(prefix[14:18], "little")
    return dib in (12, 40, 52, 56, 64, 108, 124)


def _is_text(prefix: bytes) -> bool:
    """Decodable text with almost no control characters (UTF-8/16 with a
    BOM, Shift-JIS or Windows-1252, the encodings found on real discs)."""
    if prefix.startswith((b"\xff\xfe", b"\xfe\xff")):
        codecs: tuple[str, ...] = ("utf-16",)
    elif b"\x00" in prefix:
        return False
    else:
        codecs = ("utf-8", "cp932", "cp1252")
    for codec in codecs:
        text = _decode_prefix(prefix, codec)
        if text is None:
            continue
        controls = sum(1 for c in text if ord(c) < 32 and c not in "\r\n\t\f\x1a")
        return controls <= len(text) // 100
    return False


def _decode_prefix(prefix: bytes, codec: str) -> str | None:
    """Decode, forgiving a multi-byte character cut by the prefix's end."""
    try:
        return prefix.decode(codec)
    except UnicodeDecodeError as exc:
        if exc.start >= len(prefix) - 3 and len(prefix) >= PREFIX_SIZE:
            return prefix[: exc.start].decode(codec, "ignore")
        return None
