// A small Markdown renderer that builds DOM nodes from text nodes only: model
// output can never inject HTML. Supports fenced code, headings, lists, paragraphs,
// `code`, **bold**, *italic*, and [links](https://…) with http(s) targets only.
"use strict";

function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  const lines = source.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      i++;
      const pre = document.createElement("pre");
      const el = document.createElement("code");
      el.textContent = code.join("\n");
      pre.appendChild(el);
      root.appendChild(pre);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      const h = document.createElement("h" + Math.min(heading[1].length + 2, 6));
      appendInline(h, heading[2]);
      root.appendChild(h);
      i++;
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+/;
    if (item.test(line)) {
      const list = document.createElement(/^\s*\d/.test(line) ? "ol" : "ul");
      for (; i < lines.length && item.test(lines[i]); i++) {
        const li = document.createElement("li");
        appendInline(li, lines[i].replace(item, ""));
        list.appendChild(li);
      }
      root.appendChild(list);
      continue;
    }
    if (line.trim() === "") { i++; continue; }
    const paragraph = [];
    for (; i < lines.length && lines[i].trim() !== "" && !lines[i].startsWith("```") && !item.test(lines[i]) && !/^#{1,6}\s/.test(lines[i]); i++) {
      paragraph.push(lines[i]);
    }
    const p = document.createElement("p");
    appendInline(p, paragraph.join("\n"));
    root.appendChild(p);
  }
  return root;
}

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*|_[^_\n]+_)|(\[[^\]\n]+\]\([^)\s]+\))/;

function appendInline(parent, text) {
  while (text) {
    const match = INLINE.exec(text);
    if (!match) { parent.appendChild(document.createTextNode(text)); return; }
    if (match.index) parent.appendChild(document.createTextNode(text.slice(0, match.index)));
    const token = match[0];
    let node;
    if (match[1]) { node = document.createElement("code"); node.textContent = token.slice(1, -1); }
    else if (match[2]) { node = document.createElement("strong"); appendInline(node, token.slice(2, -2)); }
    else if (match[3]) { node = document.createElement("em"); appendInline(node, token.slice(1, -1)); }
    else {
      const [, label, href] = /^\[([^\]]+)\]\(([^)]+)\)$/.exec(token);
      if (/^https?:\/\//i.test(href)) {
        node = document.createElement("a");
        node.href = href; node.rel = "noopener noreferrer"; node.target = "_blank";
        node.textContent = label;
      } else {
        node = document.createTextNode(token);
      }
    }
    parent.appendChild(node);
    text = text.slice(match.index + token.length);
  }
}
