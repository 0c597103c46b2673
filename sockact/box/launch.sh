# Starts a box, on the host: moves itself into the box's own cgroup (so systemd inside builds its tree
# there, not in the host's), leaves a watchdog behind, then becomes unshare, which runs boot.sh.
# The watchdog holds the read end of a pipe (stdin) whose write end only PrivateSystemd holds: when
# the Python process dies without closing the box, EOF arrives and the watchdog kills and removes the
# box's cgroup. Arguments: $1 the box's cgroup directory, $2 the text of boot.sh.
set -eu
cg=$1
exec 3<&0
( cat <&3 >/dev/null
  echo 1 > "$cg/cgroup.kill" 2>/dev/null || true
  for _ in $(seq 50); do
      [ -d "$cg" ] || break
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null && break
      sleep 0.1
  done ) &
echo $$ > "$cg/cgroup.procs"
exec unshare --pid --fork --kill-child --mount --uts --ipc --net --cgroup --mount-proc \
    --propagation private bash -c "$2" 3<&- </dev/null
