"""Methods: short recipes over the platform, one module each.

Each module exposes ``run(ctx) -> dict[str, float]`` and is registered under
the ``fieldkd.methods`` entry-point group in setup.cfg.
"""
