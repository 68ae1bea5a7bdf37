"""The audit trail: a hash-chained local record and the PS3.15 syslog sink."""
