"""Benchmark support for bench/ (pytest-benchmark suites) and `fastclr bench`.

    impls.py        the loss implementations measured side by side, their inputs and the oracle
    memory.py       peak extra memory: CUDA allocator statistics on GPU, peak RSS in a worker on CPU
    environment.py  what every result records: device, driver/CUDA, versions, timestamp
    report.py       bench/results/**/*.json -> Markdown tables and log-log PNG plots

Nothing here is imported by `import fastclr`; peers (lightly, pytorch-metric-learning) and matplotlib
are optional (`pip install "fastclr[bench]"`) and imported only when used.
"""
