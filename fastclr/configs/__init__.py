"""Paper recipes for `fastclr train --config NAME` (NAME.yaml here; see docs/methods.md)."""
