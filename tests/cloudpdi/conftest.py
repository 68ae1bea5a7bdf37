"""Fixtures of the Cloud PDI tests: the FHIR repository stand-in on a real
HTTP server, the appliance's key pair, and a config that points at both."""

from fixtures_cloudpdi import *
