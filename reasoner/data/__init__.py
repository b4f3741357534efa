"""Data: the example schema's sources (synthetic suite, dataset readers) and safe image decoding."""
