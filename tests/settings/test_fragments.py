"""htmx swaps leave every element id unique: each fragment is swapped into the page the way its trigger
declares (hx-target, hx-swap, inherited as htmx inherits them) and the ids of the result are counted."""
from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser

from flask import Flask

from console.settings import service

HX = {"HX-Request": "true"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
        "wbr"}


class Tree(HTMLParser):
    """Elements in document order with their attributes and parent index."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.nodes: list[dict] = []
        self._stack: list[int] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.nodes.append({"tag": tag, "attrs": dict(attrs),
                           "parent": self._stack[-1] if self._stack else None})
        if tag not in VOID:
            self._stack.append(len(self.nodes) - 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.nodes.append({"tag": tag, "attrs": dict(attrs),
                           "parent": self._stack[-1] if self._stack else None})

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self.nodes[self._stack.pop()]["tag"] == tag:
                break

    def ids(self) -> Counter:
        return Counter(n["attrs"]["id"] for n in self.nodes if n["attrs"].get("id"))

    def inherited(self, index: int, name: str) -> tuple[str | None, int]:
        """The attribute's value as htmx inherits it, and the element that declares it."""
        at = index
        while at is not None:
            value = self.nodes[at]["attrs"].get(name)
            if value is not None:
                return value, at
            at = self.nodes[at]["parent"]
        return None, index

    def inside(self, index: int, ancestor: int) -> bool:
        while index is not None:
            if index == ancestor:
                return True
            index = self.nodes[index]["parent"]
        return False


def swapped_ids(page: str, trigger: dict[str, str], fragment: str) -> Counter:
    """The ids of `page` after `fragment` is swapped in by the first element whose attributes
    include `trigger`."""
    tree = Tree(page)
    index = next(i for i, n in enumerate(tree.nodes)
                 if all(n["attrs"].get(k) == v for k, v in trigger.items()))
    target, declared_by = tree.inherited(index, "hx-target")
    swap = (tree.inherited(index, "hx-swap")[0] or "innerHTML").split()[0]
    if target is None:
        at = index
    elif target == "this":
        at = declared_by
    else:
        assert target.startswith("#"), target
        at = next(i for i, n in enumerate(tree.nodes) if n["attrs"].get("id") == target[1:])
    removed = Counter(n["attrs"]["id"] for i, n in enumerate(tree.nodes) if n["attrs"].get("id")
                      and tree.inside(i, at) and (swap == "outerHTML" or i != at))
    assert swap in ("outerHTML", "innerHTML"), swap
    swapped = Tree(fragment)
    for oob in (n["attrs"]["id"] for n in swapped.nodes if n["attrs"].get("hx-swap-oob") == "true"):
        # an out-of-band part replaces the page's element with its id (outerHTML)
        at = next(i for i, n in enumerate(tree.nodes) if n["attrs"].get("id") == oob)
        removed += Counter(n["attrs"]["id"] for i, n in enumerate(tree.nodes)
                           if n["attrs"].get("id") and tree.inside(i, at))
    return tree.ids() - removed + swapped.ids()


def assert_unique(ids: Counter) -> None:
    twice = sorted(i for i, n in ids.items() if n > 1)
    assert not twice, f"duplicated ids after the swap: {twice}"


def test_page_ids_are_unique(admin_client) -> None:
    for path in ("/settings/messaging", "/settings/messaging/history", "/adapters", "/audit",
                 "/certificates"):
        response = admin_client.get(path)
        assert response.status_code == 200, path
        assert_unique(Tree(response.get_data(as_text=True)).ids())


def test_settings_swaps_keep_ids_unique(admin_client) -> None:
    page = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    saved = admin_client.post("/settings/messaging/nats", headers=HX, data={"keepalive": "1"})
    assert_unique(swapped_ids(page, {"hx-post": "/settings/messaging/nats", "method": "post"},
                              saved.get_data(as_text=True)))
    status = admin_client.get("/settings/messaging/nats/status", headers=HX)
    assert_unique(swapped_ids(page, {"id": "nats-status"}, status.get_data(as_text=True)))
    overview = admin_client.get("/settings/messaging/overview?active=nats", headers=HX)
    assert overview.status_code == 200
    assert_unique(swapped_ids(page, {"id": "overview"}, overview.get_data(as_text=True)))
    moved = admin_client.post("/settings/messaging/priorities", headers=HX, data={"move": "kafka:down"})
    assert_unique(swapped_ids(page, {"hx-post": "/settings/messaging/priorities"},
                              moved.get_data(as_text=True)))


def test_history_swaps_keep_ids_unique(app: Flask, admin_client) -> None:
    with app.app_context():
        service.apply_changes("mqtt", {"host": "mqtt-a"}, "t")
        service.apply_changes("mqtt", {"host": "mqtt-b"}, "t")
    page = admin_client.get("/settings/messaging/history").get_data(as_text=True)
    preview = admin_client.get("/settings/messaging/history/2/preview", headers=HX)
    assert preview.status_code == 200
    after_preview = swapped_ids(page, {"hx-get": "/settings/messaging/history/2/preview"},
                                preview.get_data(as_text=True))
    assert_unique(after_preview)
    assert after_preview["rollback-preview"] == 1
    a_second_preview = admin_client.get("/settings/messaging/history/1/preview", headers=HX)
    merged = page.replace('<div id="rollback-preview" aria-live="polite"></div>',
                          preview.get_data(as_text=True))
    assert_unique(swapped_ids(merged, {"hx-get": "/settings/messaging/history/1/preview"},
                              a_second_preview.get_data(as_text=True)))
    done = admin_client.post("/settings/messaging/history/2/rollback", headers=HX, data={})
    assert_unique(swapped_ids(merged, {"hx-post": "/settings/messaging/history/2/rollback"},
                              done.get_data(as_text=True)))
