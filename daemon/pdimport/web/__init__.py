"""Network intake and delivery over HTTP: DICOMweb (STOW-RS, QIDO-RS,
WADO-RS) and the Cloud PDI channel, on one client (:mod:`pdimport.web.http`)."""
