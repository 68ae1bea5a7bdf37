"""Every setting of pdimport, declared once (see :mod:`pdimport.settings`)."""

from __future__ import annotations

import re

from pdimport.settings_decl import ALL, Setting

#: Commands that deliver: an import, or a person's decision on a held job.
_IMPORT = ("import", "release", "discard", "token")
_SEND = ("import", "daemon", "release", "discard", "token")
_DAEMON = ("daemon",)
#: ``HOST:PORT`` or ``[IPv6]:PORT`` (the console checks the address itself).
_LISTEN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "state_dir",
        str,
        "/var/lib/pdimport",
        "journal, spool, reports and audit trail",
        flag="--state-dir",
        commands=ALL,
        metavar="DIR",
        min=1,
    ),
    Setting(
        "dest",
        str,
        [],
        "default destinations: dicom://AET@host:port or file:///path (flag repeatable)",
        flag="--dest",
        # pdimport bench delivers to the first one, instead of its own receiver
        commands=(*_SEND, "bench"),
        multiple=True,
        metavar="URL",
    ),
    Setting(
        "calling_aet",
        str,
        "PDIMPORT",
        "our AE title when we call a destination",
        flag="--calling-aet",
        commands=_SEND,
        metavar="AET",
        validate=lambda v: 0 < len(v.strip()) <= 16,
        allowed="1 to 16 characters",
    ),
    # the appliance (pdimport daemon)
    Setting(
        "devices",
        str,
        ["sr*", "sd*"],
        "kernel names of block devices watched, e.g. "
        "'sr*' 'loop*'; sd* only ever matches USB (ID_BUS=usb)",
        flag="--devices",
        commands=_DAEMON,
        multiple=True,
        nargs="+",
        metavar="GLOB",
        min=1,
    ),
    Setting(
        "watch",
        str,
        "",
        "watch folder for ISO/zip/folder packages (empty = off)",
        flag="--watch",
        commands=_DAEMON,
        metavar="DIR",
    ),
    Setting(
        "eject_after",
        str,
        "delivered",
        "when the disc comes out: read | delivered",
        flag="--eject-after",
        commands=_DAEMON,
        choices=("read", "delivered"),
    ),
    Setting(
        "debounce",
        float,
        1.5,
        "seconds with no newer udev event before a disc is read",
        min=0,
        min_open=True,
    ),
    Setting(
        "watch_settle",
        float,
        5.0,
        "seconds a dropped package must stay unchanged",
        min=0,
        min_open=True,
    ),
    Setting(
        "retry_max_delay",
        float,
        300.0,
        "longest back-off while a destination is down",
        min=0,
        min_open=True,
    ),
    Setting("stop_timeout", float, 15.0, "grace period on SIGTERM, seconds", min=0, min_open=True),
    Setting("eject_retries", int, 5, "attempts to eject an optical tray", min=1),
    # policy: AI results, Other Content, routes (issue 5)
    Setting(
        "ai.policy",
        str,
        "mark",
        "AI results: mark (prefix and send), hold the job, or skip them",
        flag="--ai",
        commands=_IMPORT,
        choices=("mark", "hold", "skip"),
    ),
    Setting(
        "ai.prefix",
        str,
        "[AI]",
        "prefix put on SeriesDescription of AI results",
        validate=lambda v: 0 < len(v.strip()) <= 16,
        allowed="1 to 16 characters",
    ),
    Setting(
        "ai.patterns",
        str,
        [],
        "regular expressions naming AI products/keywords (empty = the built-in list)",
        multiple=True,
    ),
    Setting(
        "ai.segment_algorithm_types",
        str,
        ["AUTOMATIC"],
        "Segment Algorithm Type values that make a SEG an AI result (MANUAL and "
        "SEMIAUTOMATIC are a person's work); a SEG with none of them is AI only "
        "by an algorithm identification",
        multiple=True,
        choices=("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"),
    ),
    Setting(
        "ai.algorithm_identification",
        bool,
        True,
        "an Algorithm Identification item naming an algorithm (Segmentation or "
        "Derivation Algorithm Identification, PS3.3 Table 10-19) makes an object an AI result",
    ),
    Setting("convert_other_content", bool, True, "turn PDF/JPEG/PNG/TIFF/BMP/text into DICOM"),
    Setting(
        "route",
        str,
        [],
        "KIND[:MODALITY]=URL: also send KIND (image, rt, ai, document, "
        "sr, other) there, e.g. rt=dicom://TPS@host:104 (flag repeatable)",
        flag="--route",
        commands=_IMPORT,
        multiple=True,
        metavar="KIND=URL",
    ),
    # patient reconciliation (IHE Import Reconciliation Workflow)
    Setting(
        "reconcile.sources",
        str,
        [],
        "where local patients are looked up, tried in order: mwl://AET@host:port, "
        "pdq://AET@host:port, csv:///path, sqlite:///path, expect: (flag repeatable; "
        "empty = no reconciliation)",
        flag="--identity",
        commands=("import", "daemon", "release", "discard"),
        multiple=True,
        metavar="URL",
    ),
    Setting(
        "reconcile.timeout",
        float,
        10.0,
        "seconds an identity source may take to answer",
        min=0,
        min_open=True,
    ),
    Setting(
        "reconcile.unmatched",
        str,
        "hold",
        "when no local patient matches: hold (a person decides), keep (foreign ID, "
        "issuer = the sending institution) or prefix (reconcile.prefix + foreign ID)",
        choices=("hold", "keep", "prefix"),
    ),
    Setting(
        "reconcile.prefix",
        str,
        "EXT-",
        "prefix put on a foreign Patient ID under reconcile.unmatched = prefix",
        validate=lambda v: 0 < len(v) <= 16 and "\\" not in v,
        allowed="1 to 16 characters, no backslash",
    ),
    Setting(
        "reconcile.accession",
        str,
        "keep",
        "AccessionNumber on reconciled instances: keep, clear, or worklist "
        "(the matched worklist entry's)",
        choices=("keep", "clear", "worklist"),
    ),
    Setting(
        "reconcile.issuer",
        str,
        "",
        "IssuerOfPatientID of local IDs when the identity source names none",
    ),
    Setting(
        "spool.retention_days",
        float,
        30.0,
        "days a discarded medium's spooled files are kept before they are purged",
        min=0,
    ),
    Setting(
        "spool.min_free_mb",
        int,
        512,
        "free space (MB) under which the appliance takes no more media (disk_full): intake "
        "pauses before the disk is full and resumes when space is back",
        min=0,
    ),
    Setting(
        "policy.multi_patient",
        str,
        "hold",
        "a medium with several patients: hold (a person releases each) or split "
        "(each reconciled and delivered on its own, never merged)",
        choices=("hold", "split"),
    ),
    # label printer
    Setting(
        "printer.backend",
        str,
        "none",
        "label printer back-end",
        choices=("none", "zpl", "cups", "file"),
    ),
    Setting(
        "printer.target",
        str,
        "",
        "zpl: tcp://host:9100 or /dev/usb/lp0; cups: queue name; file: folder",
    ),
    Setting(
        "printer.size",
        str,
        "62mm",
        "label stock: 62mm (continuous) or 4x2 inches",
        choices=("62mm", "4x2"),
    ),
    Setting("printer.dpi", int, 203, "ZPL print-head resolution", choices=(203, 300, 600)),
    Setting("printer.format", str, "pdf", "file back-end output", choices=("pdf", "png")),
    Setting(
        "printer.timeout",
        float,
        10.0,
        "printer connection / lp timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting("printer.cups_options", str, "", "extra lp -o options, space-separated"),
    # audit trail
    Setting("audit.consent", str, "unknown", "the consent field written into every audit record"),
    Setting("audit.syslog", str, "", "PS3.15 audit repository: udp://host:514 or tcp://host:601"),
    Setting("audit.site_id", str, "", "AuditEnterpriseSiteID in PS3.15 messages"),
    Setting("audit.facility", str, "", "this site's name, recorded as the importing facility"),
    # network
    Setting(
        "network.connection_timeout",
        float,
        10.0,
        "TCP connect timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting(
        "network.acse_timeout",
        float,
        30.0,
        "association negotiation timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting(
        "network.dimse_timeout",
        float,
        60.0,
        "wait for one C-STORE response, seconds",
        min=0,
        min_open=True,
    ),
    Setting(
        "network.network_timeout",
        float,
        60.0,
        "idle network timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting("network.max_pdu", int, 0, "maximum PDU we receive (0 = unlimited)", min=0),
    Setting(
        "network.associations",
        int,
        4,
        "parallel associations (one worker process each) "
        "per destination, for deliveries of at least 64 instances or 64 MB; a "
        "destination's ?associations=N overrides",
        min=1,
        max=32,
    ),
    Setting(
        "network.commitment_listen",
        str,
        "127.0.0.1:11113",
        "HOST:PORT where a destination with ?commitment=1 calls us back with its storage "
        "commitment report (the PACS must know our AE title at this address)",
    ),
    Setting(
        "network.commitment_timeout",
        float,
        60.0,
        "seconds to wait for a storage commitment report before the job waits and asks again",
        min=1,
    ),
    Setting("network.retries", int, 3, "attempts per delivery run before the job waits", min=1),
    Setting("network.retry_delay", float, 2.0, "first back-off between attempts, seconds", min=0),
    # reading limits (hostile media)
    Setting("limits.max_file_size", int, 8 << 30, "largest single file accepted, bytes", min=1),
    Setting(
        "limits.max_medium_size",
        int,
        128 << 30,
        "largest total a medium may expand to, bytes",
        min=1,
    ),
    Setting("limits.max_files", int, 500_000, "most entries a medium may hold", min=1),
    Setting("limits.max_zip_ratio", int, 200, "largest compression ratio of a zip entry", min=1),
    Setting("limits.max_nesting", int, 64, "deepest sequence nesting accepted (dcmtk: 64)", min=1),
    Setting("limits.max_inflate", int, 2 << 30, "largest inflated deflate dataset, bytes", min=1),
    Setting("limits.max_dicomdir_records", int, 1_000_000, "most DICOMDIR records walked", min=1),
    # a damaged disc must not hold a drive for an hour (hardware notes: each bad
    # sector costs the drive's own retries, up to 3 x 30 s in the kernel)
    Setting(
        "limits.max_bad_sectors",
        int,
        200,
        "unreadable sectors after which the rest of a medium is not read (read_abandoned)",
        min=0,
    ),
    Setting(
        "limits.max_read_error_minutes",
        float,
        10.0,
        "minutes spent on files that failed to read after which the rest of a medium "
        "is not read (read_abandoned)",
        min=0,
    ),
    # decoding for destinations that refuse a compressed syntax (pdimport.transcode)
    Setting(
        "decode.memory_budget_mb",
        int,
        4096,
        "memory all decode workers may take together, MB: each worker gets an equal "
        "share (at least 512, so fewer workers on a small budget), each file a cap "
        "from its decoded size",
        min=512,
    ),
    # the operator console (pdimport.console), served by the daemon
    Setting("console.enabled", bool, True, "serve the operator console from the daemon"),
    Setting(
        "console.listen",
        str,
        "127.0.0.1:8104",
        "HOST:PORT the console listens on; an address other than loopback needs "
        "console.tls_cert and console.tls_key",
        validate=lambda v: bool(_LISTEN.match(v)) and int(v.rsplit(":", 1)[1]) <= 65535,
        allowed="HOST:PORT, e.g. 127.0.0.1:8104 or [::1]:8104",
    ),
    Setting("console.tls_cert", str, "", "PEM certificate file of the console (HTTPS)"),
    Setting("console.tls_key", str, "", "PEM private key file of console.tls_cert"),
    Setting(
        "console.idle_timeout",
        float,
        900.0,
        "seconds without a request before a console session ends",
        min=0,
        min_open=True,
    ),
    Setting(
        "console.login_attempts",
        int,
        5,
        "failed logins per name or address within 5 minutes before more are refused",
        min=1,
    ),
    # scanning
    Setting(
        "scanner",
        str,
        "auto",
        "header scanner",
        flag="--scanner",
        commands=("import", "scan"),
        choices=("auto", "pydicom", "numba"),
    ),
    # DICOMweb and Cloud PDI peers (pdimport.web.http): one set for every HTTP peer
    Setting(
        "web.auth",
        str,
        "none",
        "HTTP authentication of DICOMweb peers",
        choices=("none", "basic", "bearer", "oauth2"),
    ),
    Setting("web.username", str, "", "user name for web.auth = basic"),
    Setting("web.password_file", str, "", "file holding the password for web.auth = basic"),
    Setting("web.token_file", str, "", "file holding the token for web.auth = bearer"),
    Setting("web.oauth_token_url", str, "", "OAuth 2.0 token endpoint (client credentials grant)"),
    Setting("web.oauth_client_id", str, "", "OAuth 2.0 client id"),
    Setting("web.oauth_client_secret_file", str, "", "file holding the OAuth 2.0 client secret"),
    Setting("web.oauth_scope", str, "", "OAuth 2.0 scope asked for (space-separated)"),
    Setting(
        "web.ca_bundle",
        str,
        "",
        "PEM CA bundle that HTTPS peers are checked against (empty: the system's)",
    ),
    Setting("web.client_cert", str, "", "PEM client certificate for HTTPS peers that ask for one"),
    Setting(
        "web.client_key", str, "", "PEM private key of web.client_cert (if not in the same file)"
    ),
    Setting(
        "web.timeout",
        float,
        30.0,
        "seconds to connect and for each read from an HTTP peer",
        min=0,
        min_open=True,
    ),
    Setting("web.connections", int, 4, "keep-alive connections per HTTP peer", min=1, max=64),
    # a hospital group's stations sharing one journal (issue 19)
    Setting(
        "journal.url",
        str,
        "",
        "the journal's database: empty for STATE_DIR/journal.sqlite (this station alone), "
        "or postgresql://USER@HOST:PORT/DB shared by the stations of a hospital group",
        validate=lambda v: v == "" or v.startswith(("postgresql://", "postgres://")),
        allowed="empty, or a postgresql:// URL",
    ),
    Setting(
        "station.name",
        str,
        "",
        "this station's name in a shared journal (the jobs whose spool it holds); "
        "empty for the host name",
        max=64,
    ),
    Setting(
        "web.stow_batch_files",
        int,
        50,
        "instances per STOW-RS request at most (a dicomweb+ URL's ?batch=N wins)",
        min=1,
        max=10000,
    ),
    Setting(
        "web.stow_batch_mb",
        int,
        64,
        "megabytes per STOW-RS request at most (one larger instance goes alone)",
        min=1,
    ),
    # Cloud PDI (pdimport.cloudpdi): the token channel beside the drives
    Setting(
        "cloudpdi.profile",
        str,
        "",
        "TOML profile naming the token decoder, repository client and package "
        "decryptor (empty: the packaged reference profile)",
        flag="--cloudpdi-profile",
        commands=("token",),
        metavar="FILE",
    ),
    Setting(
        "cloudpdi.repository",
        str,
        "",
        "base URL of the Cloud PDI FHIR R4 repository, e.g. https://host/fhir "
        "(authenticated by the web.* settings, OAuth 2.0 as HS043 describes)",
        flag="--repository",
        commands=("token",),
        metavar="URL",
    ),
    Setting(
        "cloudpdi.max_chunk_mb",
        int,
        64,
        "largest encrypted chunk accepted, MB (one chunk is held in memory to decrypt it)",
        min=1,
        max=1024,
    ),
    Setting(
        "cloudpdi.max_package_mb",
        int,
        16384,
        "largest reassembled package accepted, MB",
        min=1,
    ),
    Setting(
        "cloudpdi.clock_skew",
        float,
        300.0,
        "seconds of clock difference forgiven when checking a token's issue date and expiry",
        min=0,
    ),
    # DICOMweb intake (pdimport.web.medium, pdimport.web.poller)
    Setting(
        "intake.qido_url",
        str,
        "",
        "QIDO-RS study search the daemon polls, e.g. "
        "dicomweb+https://host/dicom-web/studies?ModalitiesInStudy=CT (empty: none)",
        validate=lambda v: not v or v.lower().startswith(("dicomweb+http://", "dicomweb+https://")),
        allowed="a dicomweb+http(s)://…/studies URL",
    ),
    Setting(
        "intake.qido_interval",
        float,
        300.0,
        "seconds between two searches of intake.qido_url",
        min=1,
    ),
    Setting(
        "intake.qido_page_size",
        int,
        500,
        "matches asked for per QIDO-RS request (limit/offset paging)",
        min=1,
        max=10000,
    ),
    Setting(
        "intake.wado_retries",
        int,
        3,
        "times a WADO-RS retrieve broken off mid-instance is taken up again",
        min=0,
        max=100,
    ),
)
