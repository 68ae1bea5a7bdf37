"""Durable storage of what was read: the content-addressed spool and the job journal."""
