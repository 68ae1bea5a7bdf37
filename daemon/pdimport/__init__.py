"""pdimport: import patient media (CD/DVD/BD, USB sticks, ISO images, zip
packages) into a PACS, with a journal so that nothing is lost or sent twice."""

import os

__version__ = "0.1.0"

# numpy loads OpenBLAS, which starts a thread per core at import (0.07-0.08 s
# of CPU per command, measured on `pdimport scan`) and lets them spin after
# use. Nothing here multiplies matrices; on a two-core appliance those
# cycles belong to the reader, the sender and the PACS. Set before numpy is
# imported; an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
