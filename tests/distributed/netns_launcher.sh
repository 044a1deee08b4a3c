#!/bin/sh
# Stands in for ssh on one machine whose "hosts" are Linux network namespaces (see
# tests/distributed/netns.py): `netns_launcher.sh [-x ...] HOST COMMAND...` runs COMMAND, as ssh
# would (one string, through a shell), inside the network namespace named HOST, in a UTS
# namespace of its own whose hostname is HOST. MPICH uses it through
#   HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC=/path/to/netns_launcher.sh
# A folder listed in /run/dlrun-netns/HOST.hide (one a line) is covered by an empty tmpfs there (in
# the mount namespace `ip netns exec` makes), as on a host that lacks it. Needs root.
while [ "${1#-}" != "$1" ]; do shift; done  # ssh options hydra passes (-x)
host=$1
shift
exec ip netns exec "$host" unshare --uts -- sh -c '
hostname "$0" || exit 1
if [ -f "/run/dlrun-netns/$0.hide" ]; then
  while read -r folder; do mount -t tmpfs none "$folder" || exit 1; done < "/run/dlrun-netns/$0.hide"
fi
exec sh -c "$1"' "$host" "$*"
