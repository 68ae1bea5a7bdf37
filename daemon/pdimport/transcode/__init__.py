"""Pixel decoding and re-encoding for destinations that refuse a transfer syntax."""
