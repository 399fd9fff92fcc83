#!/bin/busybox sh
vm=/run/crabbox-vm    # busybox, this script and the work share, kept across switch_root
share=$vm/work
cg=/sys/fs/cgroup

fail() {
    echo "crabbox-vm: $*" >&2
    reboot -f    # ends qemu (-no-reboot); the host finds no exit status and says so
}

mount_kernel_filesystems() {
    mkdir -p /proc /sys /dev /tmp /run
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    mount -t tmpfs -o mode=0755 tmpfs /run
}

load_modules() {
    while read -r module; do
        insmod "$module" || echo "crabbox-vm: cannot load $module" >&2
    done < /etc/modules.load
}

# The value of NAME=VALUE on the kernel command line
kernel_option() {
    for option in $(cat /proc/cmdline); do
        case "$option" in "$1"=*) echo "${option#*=}" ;; esac
    done
}

# Pure cgroup v2, mounted as systemd mounts it, with every controller enabled for the root's
# children. Then init moves into a leaf, /init.scope, as systemd does: the command starts in
# a cgroup of its own, next to which it can create cgroups with any controller.
mount_cgroup_v2() {
    mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $cg || fail "cannot mount cgroup2"
    for controller in $(cat $cg/cgroup.controllers); do
        echo "+$controller" > $cg/cgroup.subtree_control ||
            echo "crabbox-vm: cannot enable the $controller controller" >&2
    done
    mkdir $cg/init.scope
    echo $$ > $cg/init.scope/cgroup.procs
}

# cgroup v1 as Debian's systemd mounts it: a read-only tmpfs with one hierarchy per enabled
# controller of /proc/cgroups (cpu and cpuacct share one, as do net_cls and net_prio, with a
# link for each name), and a named hierarchy for systemd.
mount_cgroup_v1() {
    mount -t tmpfs -o mode=0755 tmpfs $cg
    while read -r controller hierarchy count enabled; do
        [ "$enabled" = 1 ] || continue    # also skips the header line
        case "$controller" in
            cpu | cpuacct) hierarchy=cpu,cpuacct ;;
            net_cls | net_prio) hierarchy=net_cls,net_prio ;;
            *) hierarchy=$controller ;;
        esac
        [ -d $cg/$hierarchy ] && continue
        mkdir $cg/$hierarchy
        mount -t cgroup -o $hierarchy cgroup $cg/$hierarchy ||
            echo "crabbox-vm: cannot mount the cgroup v1 hierarchy $hierarchy" >&2
    done < /proc/cgroups
    link_comounted cpu cpuacct
    link_comounted net_cls net_prio
    mkdir $cg/systemd
    mount -t cgroup -o none,name=systemd cgroup $cg/systemd
    mount -o remount,ro $cg
}

link_comounted() {
    [ -d "$cg/$1,$2" ] || return 0
    ln -s "$1,$2" $cg/$1
    ln -s "$1,$2" $cg/$2
}

mount_shares() {
    mkdir -p $share /mnt/hostroot
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none work $share ||
        fail "cannot mount the work share"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /mnt/hostroot ||
        fail "cannot mount the host's root"
}

# The new root is the host's root under an overlay whose upper layer is a tmpfs: the guest
# sees the host's files at their paths and may write anywhere, and its writes vanish with it.
# The mounts made here (cgroups included) are bound into it; switch_root keeps them.
enter_host_root() {
    mkdir -p /mnt/layer /newroot
    mount -t tmpfs tmpfs /mnt/layer
    mkdir /mnt/layer/upper /mnt/layer/work
    mount -t overlay -o lowerdir=/mnt/hostroot,upperdir=/mnt/layer/upper,workdir=/mnt/layer/work \
        overlay /newroot || fail "cannot mount the overlay on the host's root"
    for dir in /proc /sys /dev /tmp /run; do
        mount -o rbind $dir /newroot$dir || fail "cannot bind $dir into the new root"
    done
    bind_host_tmp_dirs
    cp /bin/busybox /init $vm/
    # switch_root, not chroot: the kernel refuses user namespaces to a chrooted process.
    exec switch_root /newroot $vm/busybox sh $vm/init stage2
}

# The guest's /tmp is a tmpfs of its own; the host's directories there that the command needs
# are bound in, read-only.
bind_host_tmp_dirs() {
    while read -r dir; do
        if [ -d "/mnt/hostroot$dir" ]; then mkdir -p "/newroot$dir"; else touch "/newroot$dir"; fi
        mount -o bind "/mnt/hostroot$dir" "/newroot$dir" || fail "cannot bind $dir from the host"
    done < $share/host-tmp-dirs
}

stage1() {
    /bin/busybox --install -s /bin
    export PATH=/bin
    mount_kernel_filesystems
    load_modules
    case "$(kernel_option crabbox.cgroup)" in
        v1) mount_cgroup_v1 ;;
        *) mount_cgroup_v2 ;;
    esac
    ip link set lo up
    mount_shares
    enter_host_root
}

stage2() {
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    $vm/busybox sh $share/run.sh < /dev/null > $share/stdout 2> /dev/console
    echo $? > $share/exit-code
    # The share has no cache (cache=none), so once synced, all is on the host. It is not
    # unmounted: processes the command left running may still hold files in it open.
    sync
    $vm/busybox reboot -f
}

case "$1" in
    stage2) stage2 ;;
    *) stage1 ;;
esac
