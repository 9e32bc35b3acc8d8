"""One module per ``metarl`` subcommand; each exposes ``main(argv) -> int``.

Modules are imported only when their command runs, so ``metarl --help`` and
``metarl envs`` stay fast.
"""
