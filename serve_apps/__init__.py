"""Ray Serve applications; each module exports ``build_app(args) -> Application``."""
