"""The configuration reference in README.md, generated from the settings models.

`python -m ckpt.settings_reference` prints it; a test keeps README.md in step with the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from ckpt.agent.settings import AgentSettings
from ckpt.api.settings import ApiSettings
from ckpt.operator.settings import OperatorSettings

PARTS: list[tuple[str, type[BaseSettings]]] = [
    ("Checkpoints API (`ckpt api serve`)", ApiSettings),
    ("Node agent (`ckpt agent serve`)", AgentSettings),
    ("Operator (`ckpt operator run`)", OperatorSettings),
]
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _default(field: object) -> str:
    from pydantic.fields import FieldInfo

    assert isinstance(field, FieldInfo)
    if field.default_factory is not None:
        produced = field.default_factory()  # type: ignore[call-arg]
        return "the host name" if isinstance(produced, str) else f"`{produced!r}`"
    value = field.default
    if value is None:
        return "unset"
    if hasattr(value, "get_secret_value"):
        return "unset (secret)"
    return f"`{value}`" if not isinstance(value, list) else f"`{','.join(value)}`"


def render() -> str:
    lines: list[str] = []
    for title, model in PARTS:
        prefix = str(model.model_config.get("env_prefix", ""))
        lines += [f"#### {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{name.upper()}` | {_default(field)} | {meaning} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def splice(readme: str) -> str:
    """README text with the generated reference between the markers."""
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{render()}{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        path = Path("README.md")
        path.write_text(splice(path.read_text()))
    else:
        sys.stdout.write(render())
