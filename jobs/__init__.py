"""One Ray job per stage of the recipe; ``python -m jobs.<stage> --config <yaml> [key=value ...]``."""
