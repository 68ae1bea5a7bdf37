"""Fixtures of the console tests."""

from fixtures_console import *
