"""An emulated optical drive as a real block device: now
:mod:`pdimport.capacity.drive` (``pdimport bench`` ships it). This name stays
for the tests that import it from ``hardware/`` and as the shell command::

    python hardware/fusedrive.py LIBRARY MOUNTPOINT --profile dvd --scale 4
"""

from __future__ import annotations

import sys
from pathlib import Path

# This checkout's package first: the shell command serves this tree's model.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
from pdimport.capacity.drive import Drive, DriveFS, emulated_drive, main, serve

__all__ = ["Drive", "DriveFS", "emulated_drive", "main", "serve"]

if __name__ == "__main__":
    raise SystemExit(main())
