"""The chat page's Markdown, in headless Chromium: CommonMark's word-boundary
rule for ``_``, rendering piece by piece equal to rendering at once, and a long
answer that replaces a bounded number of nodes per frame."""

import pytest

from .test_chat_page import ANSWER, _answers, _ask, _wait_until_idle, expected_answer, import_module

pytestmark = pytest.mark.browser


def _html(page, source):
    return import_module(page, "markdown.js", """
        const box = document.createElement("div"); box.append(m.renderMarkdown(arg)); return box.innerHTML;""", source)


def test_underscores_inside_words_are_not_emphasis(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    page.goto(server.url + "/")
    _ask(page, "max_tokens and stream_options, snake_case_name and *kept*")
    _wait_until_idle(page)
    answer = _answers(page).first
    assert "max_tokens and stream_options, snake_case_name and kept" in answer.text_content()
    assert answer.locator("em").all_text_contents() == ["kept"]

    # CommonMark 0.31, 6.2: `_` opens and closes only at word boundaries; `*` also inside words
    cases = {
        "max_tokens and stream_options": "max_tokens and stream_options",
        "foo_bar_baz 中_文_字": "foo_bar_baz 中_文_字",
        "_snake_case_": "<em>snake_case</em>",
        "__init__ and _(parenthesised)_": "<strong>init</strong> and <em>(parenthesised)</em>",
        "*a* _b_ **c** __d__ ***e***": "<em>a</em> <em>b</em> <strong>c</strong> <strong>d</strong> "
                                       "<em><strong>e</strong></em>",
        "foo*bar*baz, a * b * c": "foo<em>bar</em>baz, a * b * c",
        "`co_de` and _x `y_z` w_": "<code>co_de</code> and <em>x <code>y_z</code> w</em>",
        "**Fake answer**: 你好": "<strong>Fake answer</strong>: 你好",
        "[a_b](https://example.com/x_y_) [x](javascript:alert(1))":
            '<a href="https://example.com/x_y_" rel="noopener noreferrer" target="_blank">a_b</a>'
            " [x](javascript:alert(1))",
    }
    assert {source: _html(page, source) for source in cases} == {s: f"<p>{h}</p>" for s, h in cases.items()}


SOURCES = [
    "Hello *a* b\n\n- one\n- two\nThird para\nmore\n\n```\ncode\n\n  x\n```\n# Head\ntext _x_ y\n\n"
    "1. first\n2) second\n",
    "# Title\r\nbody text\r\n\r\n- item\r\n-\r\n- last\r\n```js\r\nlet a_b = 1;\r\n",
    "a\rb\r\r## two\u2028lines\n```\nunterminated fence\n\n- not a list",
    "para with **bold\nacross** lines\n-\n- x\n#\n# y\n\n\n   \n  - indented\n+ plus",
]


def test_rendering_piece_by_piece_equals_rendering_at_once(gunicorn, page):
    server = gunicorn()
    page.goto(server.url + "/")
    mismatches = import_module(page, "markdown.js", """
        const html = (source) => {
          const d = document.createElement("div"); d.append(m.renderMarkdown(source)); return d.innerHTML;
        };
        const mismatches = [];
        for (const source of arg) {
          for (const step of [1, 2, 3, 7]) {
            const box = document.createElement("div");
            const view = new m.MarkdownView(box);
            for (let i = 0; i < source.length; i += step) {
              view.append(source.slice(i, i + step));
              view.render();
              const prefix = source.slice(0, i + step);
              if (box.innerHTML !== html(prefix)) mismatches.push([prefix, box.innerHTML, html(prefix)]);
            }
            view.render(true);
            if (box.innerHTML !== html(source)) mismatches.push([source, box.innerHTML, html(source)]);
          }
        }
        return mismatches.slice(0, 3);""", SOURCES)
    assert mismatches == []
    assert _html(page, "# Title\r\nbody") == "<h3>Title</h3><p>body</p>"   # the old page hung on "\r"


def test_a_long_answer_replaces_a_bounded_number_of_nodes_per_frame(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1")
    expected = expected_answer(server, "a long answer", max_tokens=3000)
    page.goto(server.url + "/?max_tokens=3000")
    # per MutationObserver callback (once per rendered frame at most): nodes
    # removed from and added to the answer's container
    page.evaluate("""() => {
        window.renders = [];
        new MutationObserver((records) => {
            const mine = records.filter((r) => r.target.classList?.contains("answer"));
            const count = (key) => mine.reduce((n, r) => n + r[key].length, 0);
            if (mine.length) window.renders.push([count("removedNodes"), count("addedNodes")]);
        }).observe(document.querySelector("#conversation"), { childList: true, subtree: true });
    }""")
    _ask(page, "a long answer")
    _wait_until_idle(page, timeout_ms=120_000)
    renders = page.evaluate("() => window.renders")
    blocks = page.locator(f"{ANSWER} > *").count()
    assert len(renders) >= 30 and blocks >= 30, (len(renders), blocks)
    assert max(removed for removed, _ in renders) <= 2, renders
    assert sum(added for _, added in renders) <= blocks + 2 * len(renders)
    rendered_at_once = import_module(page, "markdown.js", """
        const d = document.createElement("div"); d.append(m.renderMarkdown(arg)); return d.innerHTML;""", expected)
    assert page.locator(ANSWER).inner_html() == rendered_at_once

