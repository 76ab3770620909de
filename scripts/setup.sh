#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, test and demo ipfailover.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config   # C toolchain for -sys crates
    protobuf-compiler            # protoc, which the etcd-client crate (clusterd's native etcd lock) needs to build
    libnftnl-dev libmnl-dev      # nftnl (the ipfailover nftables table)
    nftables                     # nft, to check the table from tests
    iproute2                     # ip netns, veth, bridges
    iputils-ping                 # reachability checks in tests
    iputils-arping               # ARP checks by hand (docs)
    tcpdump                      # packet captures in tests
    ctdb                         # CTDB's cluster-lock helpers (ctdb_mutex_fcntl_helper, ctdb_etcd_lock)
    etcd-server etcd-client      # a real etcd for the etcd lock tests (docs/etcd.md)
    openssl                      # certificates for the native etcd lock's TLS test
    python3-etcd                 # what CTDB's ctdb_etcd_lock helper imports
    samba-common-bin             # testparm, which ctdb_etcd_lock asks for the NetBIOS name
    keepalived                   # the failover benchmark's baseline (VRRPv3)
    stress-ng                    # the failover-load benchmark's CPU and spawn load
    prometheus                   # the metrics test: a real Prometheus server and promtool
)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: needs root (apt-get, network namespaces)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # ctdb's package would start a ctdbd service on machines with systemd; we
    # only need its helper binaries, so keep services from starting.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi

# cargo-deb builds the Debian package (packaging/build-deb.sh; the package
# test checks its contents). Pinned: the test packages the debug build, which
# cargo-deb 3.8 accepts with a warning that a later version may turn into an
# error; a new machine must get the version this was tested with.
if ! cargo deb --version >/dev/null 2>&1; then
    echo "setup: installing cargo-deb" >&2
    cargo install cargo-deb --version 3.8.0 --locked --quiet
fi
