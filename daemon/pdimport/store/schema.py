"""The journal's tables (:class:`~pdimport.store.journal.Journal`) as
versioned migrations (:func:`pdimport.store.db.migrate`), the same on SQLite
and PostgreSQL (:func:`pdimport.store.db.ddl` translates the types).

Version 1 is the schema pdimport had before versions were recorded; every
statement is ``IF NOT EXISTS``, so a journal written by an older pdimport
takes it as it is (gaining the tables it lacks) and then the later steps.
"""

from __future__ import annotations

from pdimport.store.db import Migration

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    source_key    TEXT NOT NULL,
    source_kind   TEXT NOT NULL,
    source_path   TEXT NOT NULL,
    label         TEXT NOT NULL DEFAULT '',
    mode          TEXT NOT NULL DEFAULT 'import',
    state         TEXT NOT NULL,
    read_complete INTEGER NOT NULL DEFAULT 0,
    created       REAL NOT NULL,
    updated       REAL NOT NULL,
    report        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_source ON jobs(source_key, state);
CREATE TABLE IF NOT EXISTS files (
    job_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    path    TEXT NOT NULL,
    size    INTEGER NOT NULL,
    sha256  TEXT,
    state   TEXT NOT NULL,          -- read | error
    code    TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, path)
);
CREATE TABLE IF NOT EXISTS job_problems (
    job_id TEXT NOT NULL,
    code   TEXT NOT NULL,
    path   TEXT NOT NULL,
    detail TEXT NOT NULL            -- ROWID
);
CREATE TABLE IF NOT EXISTS derived (
    sha256      TEXT NOT NULL,      -- the spooled original
    purpose     TEXT NOT NULL,      -- e.g. 'part10', 'ts:1.2.840.10008.1.2.1'
    out_sha256  TEXT NOT NULL,
    PRIMARY KEY (sha256, purpose)
);
CREATE TABLE IF NOT EXISTS deliveries (
    dest              TEXT NOT NULL,
    sop_instance_uid  TEXT NOT NULL,
    sha256            TEXT NOT NULL,  -- content identity of the original
    state             TEXT NOT NULL,  -- sent | failed | retry | unknown
    status            INTEGER,
    code              TEXT NOT NULL DEFAULT '',
    detail            TEXT NOT NULL DEFAULT '',
    job_id            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 1,
    time              REAL NOT NULL,
    PRIMARY KEY (dest, sop_instance_uid, sha256)
);
CREATE INDEX IF NOT EXISTS deliveries_uid ON deliveries(dest, sop_instance_uid);
CREATE TABLE IF NOT EXISTS job_events (
    job_id  TEXT NOT NULL,
    time    REAL NOT NULL,
    event   TEXT NOT NULL,
    source  TEXT NOT NULL,          -- the state before
    target  TEXT NOT NULL,          -- the state after
    reason  TEXT NOT NULL DEFAULT '' -- ROWID
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events(job_id, time);
CREATE TABLE IF NOT EXISTS decisions (
    job_id    TEXT NOT NULL,
    patient   TEXT NOT NULL,        -- the foreign Patient ID as on the medium
    action    TEXT NOT NULL,        -- release | discard
    identity  TEXT,                 -- JSON: the local identity applied; NULL = unchanged
    operator  TEXT NOT NULL,
    reason    TEXT NOT NULL DEFAULT '',
    time      REAL NOT NULL         -- ROWID
);
CREATE INDEX IF NOT EXISTS decisions_job ON decisions(job_id, time);
CREATE TABLE IF NOT EXISTS commitments (
    dest              TEXT NOT NULL,
    sop_instance_uid  TEXT NOT NULL,
    sha256            TEXT NOT NULL,
    state             TEXT NOT NULL,  -- committed | failed
    detail            TEXT NOT NULL DEFAULT '',
    transaction_uid   TEXT NOT NULL,
    time              REAL NOT NULL,
    PRIMARY KEY (dest, sop_instance_uid, sha256)
);
CREATE TABLE IF NOT EXISTS settlements (
    job_id    TEXT NOT NULL,
    patient   TEXT NOT NULL,        -- the foreign Patient ID as on the medium
    identity  TEXT,                 -- JSON: the local identity; NULL = as on the medium
    match     TEXT,                 -- JSON: how it was found (kind, source, rule, detail)
    time      REAL NOT NULL,
    PRIMARY KEY (job_id, patient)
);
"""

#: The audit trail's chain head (:mod:`pdimport.record.audit`): the journal is
#: the trail's external witness of its length, so cutting records off the end
#: of the trail (or deleting it) no longer passes as "intact".
AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_head (
    trail   TEXT PRIMARY KEY,
    count   INTEGER NOT NULL,
    hash    TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


#: The journal's schema, in order; append, never edit a step once released.
JOURNAL_MIGRATIONS = (
    Migration(1, "jobs, files, deliveries, decisions, audit head", SCHEMA + AUDIT_SCHEMA),
    Migration(
        2,
        "the station that holds a job's spool (issue 19: a shared journal)",
        "ALTER TABLE jobs ADD COLUMN station TEXT NOT NULL DEFAULT ''",
    ),
)
