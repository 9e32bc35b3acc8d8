"""Ray, the optional dependency behind distributed sampling and studies.

:func:`require_ray` imports Ray or says what to install; :func:`init_ray`
starts a local Ray instance on this machine (loopback where Ray honours it,
otherwise this machine's own address; no dashboard) or connects to an
existing cluster.
"""

from __future__ import annotations

import logging
import types

from metarl.cli import UserError


def require_ray() -> types.ModuleType:
    """The ``ray`` module; :class:`~metarl.cli.UserError` naming the extra to install if it is missing."""
    try:
        import ray
    except ImportError as error:
        raise UserError(
            f"this command needs Ray, which is not installed ({error}): pip install -e '.[ray]'"
        ) from None
    return ray


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a local Ray instance on this machine, or connect to the cluster at ``address``.

    Does nothing if Ray is already initialised in this process.
    """
    ray = require_ray()
    if ray.is_initialized():
        return
    if address is not None:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    ray.init(
        address="local",  # a new instance, even where `ray start` left a cluster running on this machine
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=True,
    )
