"""Fixtures of the console tests (udevd and loop devices: the appliance tests')."""

from fixtures_console import *
from test_daemon_e2e import loops, udevd  # noqa: F401
