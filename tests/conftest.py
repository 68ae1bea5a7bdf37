"""Shared fixtures. Each area keeps its fixtures in its own module; they are
imported here so every test sees them."""

from fixtures_dicom import *  # noqa: F401,F403
from fixtures_media import *  # noqa: F401,F403
from fixtures_peers import *  # noqa: F401,F403
