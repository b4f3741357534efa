"""reasoner: teach vision-language models to reason step by step, and serve them with a verifier.

The library is pure: it never starts Ray, parses argv or reads global configuration at import.
Jobs (``jobs/``) and serve apps (``serve_apps/``) are the wiring over it.
"""

__version__ = "0.1.0"
