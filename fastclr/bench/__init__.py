"""Benchmark support for bench/ (pytest-benchmark suites) and `fastclr bench`.

    impls.py            the loss implementations measured side by side, their inputs and the oracle
    harness.py          the loss benchmark harness of bench/: sizes, correctness gate, timing, memory
    memory.py           peak extra memory: CUDA allocator statistics on GPU, peak RSS in a worker on CPU
    train_step.py       one SimCLR training step, timed (bench/test_bench_train.py, `bench gpu`)
    environment.py      what every result records: device, driver/CUDA, versions, timestamp
    results.py          the one writer of results files (atomic), bench/results/<device>/*.json
    report.py           bench/results/**/*.json -> Markdown tables and PNG plots
    report_inputs.py    reading and checking the results files for the report
    report_sections.py  the report's training, loading, acceptance and static-estimate sections
    acceptance/         `fastclr bench gpu`: the GPU acceptance run, one module per stage

Nothing here is imported by `import fastclr`; peers (lightly, pytorch-metric-learning) and matplotlib
are optional (`pip install "fastclr[bench]"`; matplotlib is also in `dev`) and imported only when used.
"""
