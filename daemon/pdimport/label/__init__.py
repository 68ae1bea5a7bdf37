"""The disc label: layout and rendering, and the printers that put it on paper."""
