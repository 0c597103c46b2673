# The box's PID 1 until it execs systemd: run by bash as the forked child of unshare (launch.sh) in the
# new namespaces. Everything mounted here lives only in the box's private mount namespace. Its inputs
# come from the environment: SOCKACT_TARGET, SOCKACT_SYSTEMD, SOCKACT_CONTAINER, SOCKACT_MASKED_UNITS.
set -eu
target=$SOCKACT_TARGET systemd=$SOCKACT_SYSTEMD container=$SOCKACT_CONTAINER masked=$SOCKACT_MASKED_UNITS
# Private scratch space: tmpfiles and services must not clean or fill the host's.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
# The host's persistent journal must neither receive the box's logs nor show up in them.
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755,nosuid,nodev tmpfs /var/log/journal; fi
# A private /dev: systemd and journald create symlinks and mount points there.
mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr
# Kernel tunables are global: read-only, except the box's own network namespace.
mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net; mount -o remount,bind,rw /proc/sys/net
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger; mount -o remount,bind,ro /proc/sysrq-trigger
fi
# sysfs for this network namespace, read-only as in any container; cgroup2 rooted at the box.
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mkdir -p /run/systemd/system /run/systemd/journald.conf.d
for unit in $masked; do ln -s /dev/null "/run/systemd/system/$unit"; done
printf '[Journal]\nStorage=volatile\n' > /run/systemd/journald.conf.d/50-sockact-test.conf
cat > "/run/systemd/system/$target" <<EOF
[Unit]
Description=Private systemd for sockact tests
Requires=sysinit.target sockets.target systemd-journald.service
After=sysinit.target sockets.target systemd-journald.service
AllowIsolate=yes
EOF
# container= makes systemd behave as in a container; nothing else of the caller's environment
# should reach the manager.
exec env -i container="$container" "$systemd" --system --unit="$target"
