"""pdimport: import patient media (CD/DVD/BD, USB sticks, ISO images, zip
packages) into a PACS, with a journal so that nothing is lost or sent twice."""

__version__ = "0.1.0"
