"""Self-supervised methods on one engine: SimCLR, MoCo v2, BYOL, SimSiam, SwAV.

registry.build_method(config) builds the method a resolved TrainConfig dict names; base.py states
the contract the trainer relies on; defaults.py holds each paper's settings (and imports no torch,
so the CLI's --help and config checks stay light).
"""
