"""axe-core (vendored from npm in static/vendor/, served by the console itself so the CSP stays
`script-src 'self'`) run in the page under test: every violation, of every rule axe runs by default
and the WCAG 2.x A/AA tags, fails the test with its rule, impact and the offending elements."""
from __future__ import annotations

AXE_PATH = "/static/vendor/axe-core-4.14.1/axe.min.js"
RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " :: " + n.failureSummary)}));
}"""


def violations(page) -> list[dict]:
    """axe's violations on the page as it is now (axe is loaded once per document)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=page.base + AXE_PATH)
    return page.evaluate(RUN)


def describe(found: list[dict]) -> str:
    return "\n".join(f"{v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"])
                     for v in found)


def assert_accessible(page, where: str = "") -> None:
    """No axe violation on the page as it is now."""
    found = violations(page)
    assert not found, f"axe violations on {where or page.url}:\n{describe(found)}"
