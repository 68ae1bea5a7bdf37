"""The embedded demo: a sample disc and a local receiver standing in for the PACS."""
