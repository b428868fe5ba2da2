# shellcheck shell=bash
# Sourced by the tools/<name>/build.sh scripts: builds main packages of one pinned Go module
# (the folder holding go.mod) once, into a cache folder keyed by a hash of everything that
# decides the output (go.mod, go.sum, the module's own .go files, the Go version, the flags and
# the list of binaries); later runs reuse it. CKPT_CACHE overrides the cache root (.cache/).
#
#   gobuild NAME MODULE_DIR BINARY=PACKAGE...
#
# Environment read: GOBUILD_LDFLAGS (extra -ldflags, e.g. -X version stamps), GOBUILD_TAGS.
# Prints the folder holding the binaries on stdout; progress goes to stderr.

gobuild() {
    local name=$1 dir=$2
    shift 2
    local root cache key out start pair bin pkg missing=()
    root=$(cd "$dir/../.." && pwd)
    cache=${CKPT_CACHE:-$root/.cache}
    # -s -w: no symbol tables (CoreDNS alone would be 110 MB with them); static binaries
    # (CGO_ENABLED=0) run in any container image and in the nodes' private mount namespaces.
    local ldflags="-s -w ${GOBUILD_LDFLAGS:-}"
    local tags=${GOBUILD_TAGS:-}
    key=$({
        cat "$dir/go.mod"
        cat "$dir/go.sum" 2>/dev/null || true
        cat "$dir"/*.go
        go env GOVERSION
        printf '%s\n' "$ldflags" "$tags" "$@"
    } | sha256sum | cut -c1-16)
    out="$cache/$name/$key"
    for pair in "$@"; do
        [[ -x "$out/${pair%%=*}" ]] || missing+=("$pair")
    done
    if ((${#missing[@]} == 0)); then
        echo "$out"
        return 0
    fi
    mkdir -p "$out"
    start=$(date +%s)
    for pair in "${missing[@]}"; do
        bin=${pair%%=*}
        pkg=${pair#*=}
        echo "building $bin ($pkg) into $out" >&2
        # -p 2: the machines this runs on have 2 cores shared with everything else.
        (cd "$dir" && CGO_ENABLED=0 go build -p 2 -trimpath -tags "$tags" -ldflags "$ldflags" \
            -o "$out/.$bin.tmp" "$pkg")
        mv "$out/.$bin.tmp" "$out/$bin"
    done
    echo "built $name in $(($(date +%s) - start))s" >&2
    echo "$out"
}

# The version of a module as go.mod of MODULE_DIR pins it (for -X version stamps).
pinned_version() {
    (cd "$1" && go list -m -f '{{.Version}}' "$2")
}
