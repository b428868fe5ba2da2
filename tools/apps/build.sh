#!/usr/bin/env bash
# Builds the workload images the application tests checkpoint (tests/apps): real programs from
# Debian's packages, in images made like ckpt's own (mmdebstrap base, buildah, no registry).
#
#   python    python3: a threaded HTTP server (python/server.py) and the TCP pair (python/tcp.py)
#   redis     redis-server and redis-cli
#   jvm       OpenJDK 21 (JRE): jvm/Counter.java, compiled here with the host's javac --release 17
#   node      Node.js: node/server.js
#   postgres  PostgreSQL 17: postgres/start.sh initialises its data folder on first start
#
# Each image is an OCI archive named ckpt.local/app-NAME:1 in .cache/apps/<key>/NAME.tar,
# where <key> hashes this folder and the base recipe; a later run with the same inputs only
# prints the folder. Prints that folder on the last line of stdout; progress goes to stderr.
# Needs root, buildah, mmdebstrap (tools/system-deps.sh) and javac (the machine's JDK).
set -euo pipefail
# Failures inside $(...) (the base images are built in one) stop the build too.
shopt -s inherit_errexit

say() { echo "apps: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache="$root/.cache/apps"
# The same storage as ckpt's images: the bases are shared.
storage="$root/.cache/images"
mirror=${CKPT_IMAGES_MIRROR:-http://deb.debian.org/debian}
security_mirror=${CKPT_IMAGES_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=trixie

for tool in buildah mmdebstrap flock javac; do
  command -v "$tool" >/dev/null || { say "$tool is missing: run tools/system-deps.sh"; exit 1; }
done

bh() {
  buildah --root "$storage/storage" --runroot "$storage/run" --storage-driver vfs "$@"
}
# shellcheck source=tools/lib/debian-base.sh
source "$here/../lib/debian-base.sh"

mkdir -p "$cache" "$storage"
exec 9>"$storage/.lock" # one buildah user of the storage at a time (tools/images too)
flock 9

key=$({
  (cd "$here" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  sha256sum "$here/../lib/debian-base.sh" | cut -d' ' -f1
} | sha256sum | cut -c1-16)
out="$cache/$key"
if [[ -f "$out/.complete" ]]; then
  say "up to date: $out"
  echo "$out"
  exit 0
fi
start=$(date +%s)
partial="$cache/.partial-$key"
rm -rf "$partial"
mkdir -p "$partial"

packages() {
  case $1 in
    python) echo python3 ;;
    redis) echo redis-server redis-tools ;;
    jvm) echo openjdk-21-jre-headless ;;
    node) echo nodejs ;;
    postgres) echo postgresql-17 ;;
  esac
}

# app NAME ENTRYPOINT-JSON: the base with the app's files under /app, committed and exported.
app() {
  local name=$1 entrypoint=$2 base ctr ref="ckpt.local/app-$1:1"
  # shellcheck disable=SC2046 # one word per package
  base=$(debian_base "app-$name" "$SUITE" ca-certificates $(packages "$name"))
  ctr=$(bh from --pull=never "$base")
  if [[ -d "$partial/files/$name" ]]; then
    bh copy "$ctr" "$partial/files/$name" /app >&2
  fi
  bh config --entrypoint "$entrypoint" --cmd '' --workingdir /app "$ctr" >&2
  bh commit --quiet --rm "$ctr" "$ref" >/dev/null
  bh push --quiet "$ref" "oci-archive:$partial/$name.tar:$ref" >&2
  say "image $ref"
}

mkdir -p "$partial/files"
cp -r "$here/python" "$partial/files/python"
cp -r "$here/node" "$partial/files/node"
cp -r "$here/postgres" "$partial/files/postgres"
mkdir -p "$partial/files/jvm"
javac --release 17 -d "$partial/files/jvm" "$here/jvm/Counter.java" >&2

app python '["python3", "-u"]'
app redis '["redis-server"]'
app jvm '["java", "-cp", "/app"]'
app node '["node"]'
app postgres '["/app/start.sh"]'

rm -rf "$partial/files"
touch "$partial/.complete"
rm -rf "$out"
mv "$partial" "$out"
# Archives of older inputs go; each set is a few hundred MB.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
bh rmi --prune >/dev/null 2>&1 || true
say "apps built in $(($(date +%s) - start))s: $out"
echo "$out"
