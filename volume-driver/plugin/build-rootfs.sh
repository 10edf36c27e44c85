#!/bin/sh
# Builds a managed-plugin directory (config.json + rootfs/) from a berth-volume binary:
#   volume-driver/plugin/build-rootfs.sh BIN OUTDIR && docker plugin create berth OUTDIR
# A static binary (RUSTFLAGS='-C target-feature=+crt-static') needs nothing else; a dynamic one
# gets the shared libraries ldd names copied beside it.
set -eu
bin=$1; out=$2
here=$(dirname "$0")
rm -rf "$out"; mkdir -p "$out/rootfs/run/docker/plugins" "$out/rootfs/mnt/berth" "$out/rootfs/tmp" "$out/rootfs/etc"
cp "$here/config.json" "$out/config.json"
cp "$bin" "$out/rootfs/berth-volume"
for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
  mkdir -p "$out/rootfs$(dirname "$lib")"; cp -L "$lib" "$out/rootfs$lib"
done
echo plugin > "$out/rootfs/etc/hostname"
