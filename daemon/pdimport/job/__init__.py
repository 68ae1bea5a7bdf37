"""One job, end to end: read a medium, inventory it, deliver it, report it (docs/architecture.md)."""
