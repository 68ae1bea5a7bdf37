"""``python -m pdimport``: the command line, importing only from the installation.

``-m`` puts the working directory first on :data:`sys.path` (unless the
interpreter runs with ``-P`` or ``PYTHONSAFEPATH``). Started from a folder
that holds a ``pydicom.py`` or a ``dl/`` (a medium's root, a download
folder), every import after this line would look there first. The entry is
dropped before anything else is imported: this package is found already,
and ``sys`` and ``os`` are loaded by the interpreter itself. The installed
``pdimport`` script (``pdimport.cli:main``) has its own folder there instead,
which holds no modules. Worker processes get a clean path whatever their
parent's (:func:`pdimport.workers.isolated_start`).
"""

import os
import sys

if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from pdimport.cli import main  # after the path is made safe

raise SystemExit(main())
