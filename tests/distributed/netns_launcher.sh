#!/bin/sh
# Stands in for ssh on one machine whose "hosts" are Linux network namespaces (see
# tests/distributed/netns.py): `netns_launcher.sh [-x ...] HOST COMMAND...` runs COMMAND, as ssh
# would (one string, through a shell), inside the network namespace named HOST, in a UTS
# namespace of its own whose hostname is HOST. MPICH uses it through
#   HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC=/path/to/netns_launcher.sh
# Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
while [ "${1#-}" != "$1" ]; do shift; done  # ssh options hydra passes (-x)
host=$1
shift
exec ip netns exec "$host" unshare --uts -- sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
