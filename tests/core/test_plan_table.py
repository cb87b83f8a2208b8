"""The README's planner table is what `python -m flashvideo_core.planning.plan_table` prints (they cannot drift)."""

from pathlib import Path

from flashvideo_core.planning.plan_table import table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_planners_output():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Less memory"):]
    start = section.index("| | 8 GB |")
    shown = section[start:section.index("\n\n", start)]
    assert shown == table(), "regenerate it: python -m flashvideo_core.planning.plan_table"
