"""The GPU check (issue 14): one bounded run that proves, or fails to prove, aeq on CUDA.

``scripts/gpu-check.sh OUT`` prepares the interpreter (installing missing wheels offline, putting
the CUDA libraries of the ``nvidia-*`` wheels on the loader's path) and runs ``python -m
aeq.bench.gpu``, which goes through the stages of ``aeq.bench.gpu.check`` within ``--budget-s``
and writes ``OUT/report.json`` and ``OUT/report.md``. On a host without a GPU it says so in one
line, records every CUDA stage as skipped with that reason, and checks the rest on the CPU.

    host.py      what the host has: driver (nvidia-smi), ONNX Runtime's providers, CUDA libraries
    stages.py    one stage's result (passed, failed, skipped), the shared time budget, child runs
    queued.py    the private service: aeq worker (--require-gpu), one queued job, the refusal
    engine.py    engine throughput per provider, model and batch, IO binding included (a child)
    service.py   the queued service against the engine, per chunk size (a child)
    report.py    report.json and report.md
    check.py     the stages in order, and the command line
"""
