"""The `fastclr` command line."""
