# shellcheck shell=bash
# Sourced by tools/images/build.sh and tools/apps/build.sh: a Debian minbase image made by
# mmdebstrap and committed with buildah, standing in for a public base image (no registry here).
#
#   debian_base NAME SUITE [PACKAGE...]
#
# Prints the image's reference; builds it on first use. Its tag hashes the recipe, so a changed
# recipe builds a new base and an unchanged one is reused across builds. The caller defines
# `bh` (buildah with its storage options), `say`, and sets `mirror`, `security_mirror` and
# `cache` (a folder for the temporary tarball).

debian_base() {
  : "${cache:?} ${mirror:?} ${security_mirror:?}"
  local name=$1 suite=$2
  shift 2
  local packages
  packages=$(IFS=,; echo "$*")
  local sources=(
    "deb $mirror $suite main"
    "deb $mirror $suite-updates main"
    "deb $security_mirror $suite-security main"
  )
  local tag
  tag=$(printf '%s\n' "$name" "$suite" "$packages" "${sources[@]}" | sha256sum | cut -c1-16)
  local ref="localhost/ckpt-base-$name:$tag"
  if bh inspect --type image "$ref" >/dev/null 2>&1; then
    echo "$ref"
    return
  fi
  say "base image $name: mmdebstrap $suite${packages:+ + $packages}"
  local tarball="$cache/tmp/base-$name.tar"
  mkdir -p "$cache/tmp"
  # No recommends and no documentation, like the slim images this stands in for; mmdebstrap
  # removes apt's package lists itself at the end. Packages whose postinst registers a man page
  # with update-alternatives (OpenJDK's java) fail when man1 is missing, excluded or not.
  # shellcheck disable=SC2016 # the hook's $1 (the new root) is expanded by mmdebstrap's shell
  mmdebstrap --quiet --variant=minbase \
    ${packages:+--include="$packages"} \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --essential-hook='mkdir -p "$1/usr/share/man/man1"' \
    "$suite" "$tarball" "${sources[@]}" >&2 || {
    # Called as $(debian_base ...): errexit does not reach into a command substitution.
    say "mmdebstrap of base image $name failed (see above)"
    return 1
  }
  local ctr
  ctr=$(bh from --pull=never scratch)
  bh add --quiet "$ctr" "$tarball" / >&2
  # What the public images set: a PATH (a scratch image has none), UTF-8 text, bash.
  bh config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd bash \
    "$ctr" >&2
  bh commit --quiet --rm "$ctr" "$ref" >/dev/null
  rm -f "$tarball"
  echo "$ref"
}
