"""Benchmarks (docs/design.md, "Benchmarks"): each prints ratios measured side by side in one process run.

Targets are modules with a ``main(argv) -> int``; ``metarl bench <target>``
(``metarl.commands.bench_cmd``) lists and dispatches them.
"""
