"""Ray, the optional extra behind ``metarl study`` and the distributed sampler: import and start it.

Ray is not a dependency of metarl (``pip install -e '.[ray]'`` adds it); every
command that uses it goes through :func:`require_ray`, which turns a missing
install into a :class:`metarl.cli.UserError` saying what to install.

:func:`init_ray` either connects to an existing cluster (``address``) or starts
(or reuses) a local instance on this machine alone. Ray 2.x ignores
``_node_ip_address="127.0.0.1"`` on Linux: it resolves the node's address "from
the perspective" of the network (this machine's own address) and its servers
listen on every interface. Ray keeps the loopback-only behaviour it uses on
macOS and Windows behind ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: with it, the
node's address is 127.0.0.1 and every Ray server (GCS, raylet, object manager,
workers) listens on loopback only. A local instance therefore sets that
variable (for this process and the Ray processes it starts) and asks for
127.0.0.1, with no dashboard and quiet logs.
"""

from __future__ import annotations

import importlib
import logging
import os
import types

from metarl.core.errors import UserError
from metarl.core.validation import check_optional_int

INSTALL_HINT = "pip install -e '.[ray]'"
LOOPBACK = "127.0.0.1"
# Ray's switch between "one machine, loopback only" (macOS/Windows default) and "clusters" (Linux default).
_LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def require_ray() -> types.ModuleType:
    """The ``ray`` module.

    Raises:
        UserError: Ray is not installed (the message says what to install).
    """
    try:
        return importlib.import_module("ray")
    except ImportError as error:
        raise UserError(
            f"this command needs Ray, an optional extra of metarl: {INSTALL_HINT} "
            f"(or pip install 'ray>=2.9'); importing it failed: {error}"
        ) from None


def keep_local() -> None:
    """Make Ray bind the node to loopback (see the module docstring); before or after importing ray."""
    os.environ[_LOCAL_ONLY_VARIABLE] = "0"
    constants = importlib.import_module("ray._private.ray_constants")
    # ray_constants reads the variable at import; services.get_node_ip_address reads this attribute.
    constants.ENABLE_RAY_CLUSTER = False


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> None:
    """Connect to a Ray cluster, or start (or reuse) a local one on this machine only.

    Args:
        address: ``None``: a local instance bound to 127.0.0.1 (reused if this
            process already started or joined one; never a cluster that ``ray start`` left
            running here). Otherwise the address of a
            running cluster's head (``HOST:PORT`` as printed by ``ray start
            --head``, or ``auto``); ``num_cpus``/``num_gpus`` are then the
            cluster's business and must be left ``None``.
        num_cpus: CPUs the local instance offers (default: this machine's).
        num_gpus: GPUs the local instance offers (default: those Ray detects).

    Raises:
        UserError: Ray is missing, or resources were given with ``address``.
    """
    ray = require_ray()
    if ray.is_initialized():
        return
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        try:
            check_optional_int(name, value, 0)
        except ValueError as error:
            raise UserError(str(error)) from None
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False,
             "configure_logging": True}
    if address is not None:
        if num_cpus is not None or num_gpus is not None:
            raise UserError(
                "num_cpus/num_gpus describe a local Ray instance; a cluster given by address "
                f"{address!r} offers the resources its nodes were started with"
            )
        quiet.pop("include_dashboard")
        ray.init(address=address, **quiet)
        return
    keep_local()
    # address="local": always a new instance, never a cluster that `ray start` left on this machine
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address=LOOPBACK, **quiet)
