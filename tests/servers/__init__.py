"""Loopback servers for the tests and the demo: real ones started as processes, and
contract-faithful stand-ins for services that cannot run here."""
