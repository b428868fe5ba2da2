"""Shell completion of `kubectl ckpt`.

kubectl (1.26 and later) completes `kubectl ckpt <TAB>` itself, with the completion script
the user already loads (`source <(kubectl completion bash)`): it runs `kubectl_complete-ckpt`
from PATH with the words after `ckpt`, the last one being the word to complete, and reads
Cobra's answer: one candidate a line (a tab, then its description), and a last line
`:<directive>`. ckpt installs that executable; `complete` below answers. The scripts of
`kubectl ckpt completion bash|zsh` ask the same executable, for `kubectl-ckpt` run on its own.

The candidates come from the command's own definition through click's completion engine (the
one typer vendors, since typer's commands are built on it): verbs, options, option values
(the -o formats, the GPU modes), names of pods, checkpoints, restores and checkpoint
policies from the cluster, and file names for --kubeconfig.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
from typer._click.core import Command
from typer._click.shell_completion import CompletionItem, ShellComplete

from ckpt.apis.policy import POLICY_PLURAL
from ckpt.user.kinds import Kind, kind_of

PROG = "kubectl ckpt"

# Cobra's ShellCompDirective values (github.com/spf13/cobra, completions.go).
DEFAULT = 0  # the shell may fall back to completing file names
NO_FILE_COMPLETION = 4

# The one option whose value is a file.
PATH_OPTION = "--kubeconfig"

# How long a completion waits for the apiserver before it offers no names.
QUICK_SECONDS = 2


class _Cobra(ShellComplete):
    """click's completion with Cobra's answer format."""

    name = "cobra"
    source_template = ""

    def __init__(self, cli: Command, words: Sequence[str]) -> None:
        # The environment variable only matters to click's own scripts, which are not used.
        super().__init__(cli, {}, PROG, "_KUBECTL_CKPT_COMPLETE")
        self.words = list(words)

    def source_vars(self) -> dict[str, Any]:
        return {}  # the scripts are SCRIPTS below, which ask kubectl_complete-ckpt

    def get_completion_args(self) -> tuple[list[str], str]:
        if not self.words:
            return [], ""
        return self.words[:-1], self.words[-1]

    def format_completion(self, item: CompletionItem) -> str:
        help_text = (item.help or "").strip().splitlines()
        # A tab separates the description; one inside it would start another.
        description = help_text[0].replace("\t", " ") if help_text else ""
        return f"{item.value}\t{description}" if description else str(item.value)

    def complete(self) -> str:
        args, incomplete = self.get_completion_args()
        lines = [self.format_completion(item) for item in self.get_completions(args, incomplete)]
        # The value of an option that takes a path: the shell's file name completion.
        path = (args[-1:] == [PATH_OPTION] and not incomplete.startswith("-")) or (
            incomplete.startswith(f"{PATH_OPTION}=")
        )
        lines.append(f":{DEFAULT if path else NO_FILE_COMPLETION}")
        return "".join(f"{line}\n" for line in lines)


def pod_names(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, "pods", incomplete)


def checkpoint_names(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, "checkpoints", incomplete)


def policy_names(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, POLICY_PLURAL, incomplete)


def describe_targets(ctx: typer.Context, incomplete: str) -> list[str]:
    """`describe`'s first word: a kind, or KIND/NAME once a slash is typed."""
    kind_name, slash, prefix = incomplete.partition("/")
    kind = kind_of(kind_name)
    if slash and kind is not None:
        return [f"{kind_name}/{name}" for name in _names(ctx, f"{kind.value}s", prefix)]
    return [kind.value for kind in Kind if kind.value.startswith(incomplete)]


def describe_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """`describe`'s second word: a name of the kind given first."""
    kind = kind_of(str(ctx.params.get("kind_or_ref") or ""))
    return [] if kind is None else _names(ctx, f"{kind.value}s", incomplete)


def _names(ctx: typer.Context, plural: str, incomplete: str) -> list[str]:
    """Names of pods, checkpoints, restores or checkpoint policies in the namespace the
    command line names (or the context's), starting with `incomplete`; none when the cluster
    does not answer at once, as a completion must not hang the shell."""
    import urllib3
    from kubernetes import client

    from ckpt.apis.checkpoint import GROUP, VERSION
    from ckpt.kubejson import json_object, response_json
    from ckpt.user.resources import UserError, api_client, context_namespace

    kubeconfig, context = ctx.params.get("kubeconfig"), ctx.params.get("context")
    try:
        namespace = ctx.params.get("namespace") or context_namespace(kubeconfig, context)
        with api_client(kubeconfig, context, retries=0) as api:
            if plural == "pods":
                found = response_json(client.CoreV1Api(api).list_namespaced_pod(
                    namespace, _request_timeout=QUICK_SECONDS, _preload_content=False
                ))
            else:
                found = json_object(client.CustomObjectsApi(api).list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, _request_timeout=QUICK_SECONDS
                ))
    except (UserError, client.ApiException, urllib3.exceptions.HTTPError, OSError, TypeError):
        return []
    names = sorted(str(item["metadata"]["name"]) for item in found.get("items", []))
    return [name for name in names if name.startswith(incomplete)]


def complete(cli: Command, words: Sequence[str]) -> str:
    """The completions of the last of `words` (the words after `kubectl ckpt`; an empty last
    word completes a new one), in Cobra's format."""
    return _Cobra(cli, words).complete()


BASH = r"""# bash completion for kubectl-ckpt, ckpt's kubectl plugin.
#
# `kubectl ckpt <TAB>` is completed by kubectl's own completion (kubectl 1.26 or later,
# loaded with `source <(kubectl completion bash)`), which asks kubectl_complete-ckpt,
# installed with ckpt. This script completes kubectl-ckpt run on its own:
#
#   source <(kubectl ckpt completion bash)      # in ~/.bashrc
_kubectl_ckpt() {
    local cur="${COMP_WORDS[COMP_CWORD]}" line directive=0
    local -a found=()
    while IFS= read -r line; do
        case "$line" in
            :*) directive="${line#:}" ;;
            ?*) found+=("${line%%$'\t'*}") ;;
        esac
    done < <(kubectl_complete-ckpt "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null)
    COMPREPLY=("${found[@]}")
    if (( ${#found[@]} == 0 && (directive & 4) == 0 )); then
        compopt -o default 2>/dev/null
    fi
    return 0
}
complete -F _kubectl_ckpt kubectl-ckpt
"""

ZSH = r"""# zsh completion for kubectl-ckpt, ckpt's kubectl plugin.
#
# `kubectl ckpt <TAB>` is completed by kubectl's own completion (kubectl 1.26 or later,
# loaded with `source <(kubectl completion zsh)`), which asks kubectl_complete-ckpt,
# installed with ckpt. This script completes kubectl-ckpt run on its own:
#
#   source <(kubectl ckpt completion zsh)       # in ~/.zshrc, after compinit
_kubectl_ckpt() {
    local line directive=0
    local -a found before=("${(@)words[2,CURRENT-1]}")
    for line in "${(@f)$(kubectl_complete-ckpt "${before[@]}" "${words[CURRENT]}" 2>/dev/null)}"; do
        case "$line" in
            :*) directive="${line#:}" ;;
            *$'\t'*) found+=("${${line%%$'\t'*}//:/\\:}:${line#*$'\t'}") ;;
            ?*) found+=("${line//:/\\:}") ;;
        esac
    done
    if (( ${#found} )); then
        _describe 'kubectl ckpt' found
    elif (( (directive & 4) == 0 )); then
        _files
    fi
}
compdef _kubectl_ckpt kubectl-ckpt
"""

SCRIPTS: dict[str, str] = {"bash": BASH, "zsh": ZSH}


def script(shell: str) -> str:
    return SCRIPTS[shell]

