"""The skills in skills/: valid Agent Skills, flag tables equal to the Params models, examples that
are what our own tool prints on the demo target, and reachable through the MCP server itself."""
import re

import anyio
import pytest
from skills_ref import validate

from flight_mcp import skills
from flight_mcp.cmdline import flags_of
from flight_mcp.tools import all_tools

from .conftest import flight_cli
from .mcp_client import mcp_session

pytestmark = pytest.mark.timeout(180)

SKILL_FILES = sorted(skills.skills_dir().glob("*/SKILL.md"))
REQUIRED = ["attach", "trace", "watch", "stack", "getglobal", "module", "reload", "vmtool"]


@pytest.mark.parametrize("name", REQUIRED)
def test_every_tool_named_in_the_brief_has_a_skill(name):
    assert (skills.skills_dir() / f"flight-mcp-{name}" / "SKILL.md").exists()


@pytest.mark.parametrize("path", SKILL_FILES, ids=lambda p: p.parent.name)
def test_skill_is_valid_for_the_agent_skills_validator(path):
    assert validate(path.parent) == []


@pytest.mark.parametrize("path", SKILL_FILES, ids=lambda p: p.parent.name)
def test_flag_tables_are_generated_from_the_params_models(path):
    text = path.read_text()
    assert skills.regenerate(text, None) == text, "run: python -m flight_mcp.skills --write"
    tools = all_tools()
    for m in skills.FLAGS_RE.finditer(text):
        for flag in flags_of(tools[m.group(2)].params):
            assert f"`{flag}`" in m.group(3), f"{flag} missing from the table of {m.group(2)}"


def _comparable(cmd: str, text: str) -> str:
    text = skills.normalize(text)
    if cmd.split()[0] == "stack":  # which line a worker thread is on varies: compare the threads only
        text = "\n".join(line for line in text.splitlines() if line.startswith("Thread"))
    if cmd.split()[0] == "monitor":  # its table right-aligns numbers whose width varies between runs
        text = re.sub(r" +", " ", text)
    return text


def test_examples_are_what_the_tool_prints_on_the_demo_target():
    documented = {}
    for path in SKILL_FILES:
        for m in skills.EXAMPLE_RE.finditer(path.read_text()):
            block = m.group(3).split("\n", 2)[2].rsplit("```", 1)[0]
            documented[m.group(2)] = block
    fresh = skills.run_examples(list(documented))
    for cmd, text in documented.items():
        if cmd.split()[0] == "trace":
            # A sub-call just under the interval (hidden) shows on a loaded machine, next to the
            # documented ones: every documented line must be there, in order; extra ones may be too.
            got, want = _tree_lines(fresh[cmd]), _tree_lines(text)
            it = iter(got)
            assert all(line in it for line in want), (
                f"the example of `{cmd}` drifted; run: python -m flight_mcp.skills --write\n{got}\n{want}")
            continue
        assert _comparable(cmd, fresh[cmd]) == _comparable(cmd, text), (
            f"the example of `{cmd}` drifted; run: python -m flight_mcp.skills --write")


def _tree_lines(text: str) -> list[str]:
    """A trace's lines without the tree glyphs (a sibling more turns a └─ into ├─)."""
    return [line.lstrip(" │├└─") for line in skills.normalize(text).splitlines()]


def test_skills_are_mcp_resources():
    async def main():
        async with mcp_session() as s:
            listed = await s.list_resources()
            uris = {str(r.uri) for r in listed.resources}
            assert "skill://flight-mcp-attach" in uris
            got = await s.read_resource("skill://flight-mcp-stack")
            assert "name: flight-mcp-stack" in got.contents[0].text
    anyio.run(main)


def test_install_skills_copies_every_skill(tmp_path):
    r = flight_cli("install-skills", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for path in SKILL_FILES:
        assert (tmp_path / path.parent.name / "SKILL.md").read_text() == path.read_text()
    assert re.search(r"installed flight-mcp-stack", r.stdout)
