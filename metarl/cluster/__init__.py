"""Ray: starting or joining a cluster (on this machine, loopback only) and sampling episodes on Ray workers."""
