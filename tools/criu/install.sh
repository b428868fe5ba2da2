#!/usr/bin/env bash
# Provide CRIU >= 4.2 for the tests and the demo, plus runc, iptables and busybox-static.
#
# * runc, iptables (CRIU locks the container's network with iptables-restore, see the field
#   notes) and busybox-static come from the system's Debian release (installed only if missing).
# * CRIU: the system's `criu` if it is >= 4.2 and `criu check` passes. Otherwise Debian forky's
#   criu package (4.2.1) and every shared library it needs (glibc included) are fetched with
#   `apt-get download` through a PRIVATE apt configuration (sources list, state and cache under
#   .cache/criu/apt), so the system's apt setup is left untouched, extracted with
#   `dpkg-deb -x` into .cache/criu/<version>/, and run through their own dynamic loader by the
#   generated wrapper .cache/criu/bin/criu. Why 4.2: Linux 6.16 restricted SO_PASSCRED and
#   SO_PASSSEC to unix, netlink and bluetooth sockets, and CRIU 4.1 (Debian 13's) asks them of
#   every socket, so it fails to dump any process with a TCP socket ("sockets: Can't get 1:16
#   opt: Operation not supported"); 4.2 asks only where they exist. Debian 12's 3.17 fails sooner.
#
# Idempotent and cached: a second run only checks the wrapper. Prints the path of the criu to
# use on its last line of stdout; everything else goes to stderr.
#
# Environment: CKPT_CRIU_SUITE (default forky), CKPT_CRIU_MIRROR (default: the Debian mirror
# the system's apt sources use), CKPT_CRIU_FORCE_DOWNLOAD=1 (ignore a system criu >= 4.2).
set -euo pipefail

say() { echo "criu-install: $*" >&2; }

repo_root() {
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    (cd "$here/../.." && pwd)
}

ROOT=$(repo_root)
CACHE="$ROOT/.cache/criu"
SUITE=${CKPT_CRIU_SUITE:-forky}
ARCH=$(dpkg --print-architecture)

# ---------------------------------------------------------------- system packages (Debian 12)
ensure_system_packages() {
    local missing=() p
    for p in runc iptables busybox-static; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2; then
            apt-get update >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
        fi
    fi
}

# ---------------------------------------------------------------- version helpers
criu_version_of() { # $1: a criu command; prints e.g. 4.1.1, or nothing
    "$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -1
}

supported() { # $1: version string; 4.2 or newer
    local major minor rest
    [[ -n "$1" ]] || return 1
    IFS=. read -r major minor rest <<<"$1"
    ((major > 4 || (major == 4 && ${minor:-0} >= 2)))
}

system_criu_usable() {
    [[ "${CKPT_CRIU_FORCE_DOWNLOAD:-0}" == 1 ]] && return 1
    local c v
    c=$(command -v criu 2>/dev/null) || return 1
    v=$(criu_version_of "$c")
    supported "$v" || { say "system criu ${v:-?} at $c is older than 4.2"; return 1; }
    "$c" check >/dev/null 2>&1 || { say "system criu $v fails 'criu check'"; return 1; }
    echo "$c"
}

# ---------------------------------------------------------------- the Debian mirror, at run time
# The first Debian archive URI among the system's apt sources (one-line .list files and
# deb822 .sources files); the security archive and third-party repositories are skipped.
system_debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' "$f" |
            grep -E '/debian/?$' | head -1 || true)
        [[ -n "$uri" ]] && { echo "${uri%/}"; return; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        uri=$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" |
            grep -E '/debian/?$' | head -1 || true)
        [[ -n "$uri" ]] && { echo "${uri%/}"; return; }
    done
    echo "http://deb.debian.org/debian"
}

# ---------------------------------------------------------------- private apt
APT_DIR="$CACHE/apt"
apt_opts() {
    printf '%s\n' \
        -o "Dir::Etc::sourcelist=$APT_DIR/sources.list" \
        -o "Dir::Etc::sourceparts=-" \
        -o "Dir::State=$APT_DIR/state" \
        -o "Dir::State::status=$APT_DIR/state/status" \
        -o "Dir::Cache=$APT_DIR/cache" \
        -o "APT::Architecture=$ARCH" \
        -o "Acquire::Languages=none" \
        -o "APT::Sandbox::User=root" \
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
}

private_apt_update() {
    local mirror keyring
    mirror=${CKPT_CRIU_MIRROR:-$(system_debian_mirror)}
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mkdir -p "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial"
    : >"$APT_DIR/state/status" # an empty dpkg status: resolve the full dependency closure
    echo "deb [signed-by=$keyring] $mirror $SUITE main" >"$APT_DIR/sources.list"
    say "private apt: $mirror $SUITE"
    local -a opts
    mapfile -t opts < <(apt_opts)
    apt-get "${opts[@]}" update >&2
}

# Every package criu needs at run time (Depends and Pre-Depends, recursively): with an empty
# status file apt lists the whole closure, including libc6 whose loader runs the binary.
dependency_closure() {
    local -a opts
    mapfile -t opts < <(apt_opts)
    apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances criu |
        grep -E '^[a-z0-9][a-z0-9.+-]+$' | sort -u
}

fetch_and_extract() {
    local -a opts pkgs
    mapfile -t opts < <(apt_opts)
    local version
    version=$(apt-cache "${opts[@]}" show criu | sed -n 's/^Version: //p' | head -1)
    [[ -n "$version" ]] || { say "criu not found in $SUITE"; exit 1; }
    local dest="$CACHE/$version"
    if [[ -x "$dest/usr/sbin/criu" && -f "$dest/.complete" ]]; then
        echo "$version"
        return
    fi
    mapfile -t pkgs < <(dependency_closure)
    say "downloading criu $version and ${#pkgs[@]} packages: ${pkgs[*]}"
    local debs="$APT_DIR/debs"
    rm -rf "$debs" "$dest.partial"
    mkdir -p "$debs" "$dest.partial"
    (cd "$debs" && apt-get "${opts[@]}" download "${pkgs[@]}" >&2)
    local deb
    for deb in "$debs"/*.deb; do
        dpkg-deb -x "$deb" "$dest.partial"
    done
    touch "$dest.partial/.complete"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    rm -rf "$debs"
    echo "$version"
}

write_wrapper() { # $1: version folder name
    local version=$1 bin="$CACHE/bin"
    local loader="" candidate
    for candidate in lib64/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2 \
        lib/ld-linux-aarch64.so.1 usr/lib/ld-linux-aarch64.so.1; do
        [[ -e "$CACHE/$version/$candidate" ]] && { loader=$candidate; break; }
    done
    [[ -n "$loader" ]] || { say "no dynamic loader in the extracted libc6"; exit 1; }
    # Every folder of the extraction that holds shared libraries, relative to it.
    local libpath
    libpath=$(cd "$CACHE/$version" && find . -name '*.so*' \( -type f -o -type l \) -printf '%h\n' |
        sed 's|^\./||' | sort -u | sed 's|^|$d/|' | paste -sd: -)
    mkdir -p "$bin"
    # The wrapper finds its version folder relative to itself, so the cache can move. It passes
    # the library path to the loader only (not LD_LIBRARY_PATH), so the programs CRIU runs
    # (iptables-restore, ip) keep using the system's own libraries.
    cat >"$bin/criu.new" <<EOF
#!/bin/sh
# Generated by tools/criu/install.sh: Debian $SUITE criu $version through its own loader.
d=\$(dirname "\$(readlink -f "\$0")")/../$version
exec "\$d/$loader" --library-path "$libpath" "\$d/usr/sbin/criu" "\$@"
EOF
    chmod 0755 "$bin/criu.new"
    mv "$bin/criu.new" "$bin/criu"
}

main() {
    ensure_system_packages
    local sys
    if sys=$(system_criu_usable); then
        echo "$sys"
        return
    fi
    local wrapper="$CACHE/bin/criu"
    if [[ -x "$wrapper" ]] && supported "$(criu_version_of "$wrapper")"; then
        echo "$wrapper"
        return
    fi
    command -v apt-get >/dev/null || { say "apt-get is needed to fetch criu"; exit 1; }
    private_apt_update
    local version
    version=$(fetch_and_extract)
    write_wrapper "$version"
    local v
    v=$(criu_version_of "$wrapper")
    [[ -n "$v" ]] || { say "the extracted criu does not run: $("$wrapper" --version 2>&1 | head -3)"; exit 1; }
    supported "$v" || { say "$SUITE's criu $v is older than 4.2: set CKPT_CRIU_SUITE to a newer suite"; exit 1; }
    if ! "$wrapper" check >&2; then
        say "warning: 'criu check' reports missing features (see above); basic dumps may still work"
    fi
    say "criu $v ready"
    echo "$wrapper"
}

main "$@"
