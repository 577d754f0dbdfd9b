"""Locust users and their clients for load-testing Bourse (see ``loadtests/README.md``)."""
