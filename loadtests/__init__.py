"""Load tests for Bourse: the Locust suite (``locustfile.py``, ``bourse_load``) and ``run.py``."""
