// The API reference: drawn from /openapi.json by this page, with a "Try it" form per endpoint.
// Local and offline (no Swagger UI from a CDN).
"use strict";

(async () => {
  const root = document.getElementById("endpoints");
  const intro = document.getElementById("intro");
  let spec;
  try {
    const res = await fetch("/openapi.json", { credentials: "same-origin" });
    spec = await res.json();
    if (!res.ok) throw new Error(spec.error || res.statusText);
  } catch (err) {
    intro.textContent = `Could not load /openapi.json: ${err.message}`;
    return;
  }
  intro.textContent = `${spec.info.summary || ""} ${spec.info.description || ""}`.trim();

  const node = (tag, props = {}, ...children) => {
    const e = document.createElement(tag);
    Object.assign(e, props);
    for (const c of children) e.append(c);
    return e;
  };

  const typeOf = (schema = {}) => {
    if (schema.anyOf)
      return schema.anyOf
        .map(typeOf)
        .filter((t) => t !== "null")
        .join(" | ");
    if (schema.type === "array") return `${typeOf(schema.items)}[]`;
    const bounds = [];
    for (const [key, sign] of [
      ["minimum", "≥"],
      ["exclusiveMinimum", ">"],
      ["maximum", "≤"],
    ]) {
      if (schema[key] != null) bounds.push(`${sign} ${schema[key]}`);
    }
    return `${schema.type || "any"}${bounds.length ? ` (${bounds.join(", ")})` : ""}`;
  };

  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const section = node("section", { className: "endpoint" });
      section.append(
        node(
          "h2",
          {},
          node("span", { className: `method ${method}`, textContent: method.toUpperCase() }),
          node("code", { textContent: ` ${path}` }),
        ),
        node("p", { textContent: op.summary || "" }),
      );
      const form = node("form", { className: "try" });
      const params = op.parameters || [];
      if (params.length) {
        const table = node("table", { className: "params" });
        table.append(
          node(
            "tr",
            {},
            node("th", { textContent: "parameter" }),
            node("th", { textContent: "type" }),
            node("th", { textContent: "value" }),
          ),
        );
        for (const p of params) {
          const input = node("input", {
            name: p.name,
            placeholder: p.schema && p.schema.default != null ? String(p.schema.default) : "",
            required: !!p.required,
          });
          input.dataset.in = p.in;
          const label = `${p.name}${p.required ? " *" : ""}`;
          table.append(
            node(
              "tr",
              {},
              node(
                "td",
                {},
                node("code", { textContent: label }),
                node("div", {
                  className: "param-doc",
                  textContent: p.description || (p.schema && p.schema.description) || "",
                }),
              ),
              node("td", { textContent: `${p.in}: ${typeOf(p.schema)}` }),
              node("td", {}, input),
            ),
          );
        }
        form.append(table);
      }
      const upload =
        op.requestBody && op.requestBody.content && op.requestBody.content["multipart/form-data"];
      let fileInput = null;
      if (upload) {
        fileInput = node("input", {
          type: "file",
          name: "file",
          accept: "audio/*",
          required: true,
        });
        form.append(node("p", {}, node("label", { textContent: "file * " }, fileInput)));
      }
      const out = node("pre", { className: "response", hidden: true });
      form.append(
        node("button", {
          className: "button secondary small",
          type: "submit",
          textContent: "Try it",
        }),
      );
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        let url = path;
        const query = new URLSearchParams();
        for (const input of form.querySelectorAll("input[data-in]")) {
          if (!input.value) continue;
          if (input.dataset.in === "path")
            url = url.replace(`{${input.name}}`, encodeURIComponent(input.value));
          else query.append(input.name, input.value);
        }
        if (query.toString()) url += `?${query}`;
        if (path.startsWith("/api/audio/")) {
          window.open(url, "_blank", "noopener");
          return;
        }
        const options = { method: method.toUpperCase(), credentials: "same-origin" };
        if (fileInput) {
          const body = new FormData();
          body.append("file", fileInput.files[0]);
          options.body = body;
        }
        out.hidden = false;
        out.textContent = `${options.method} ${url} …`;
        try {
          const res = await fetch(url, options);
          const text = await res.text();
          let shown = text;
          try {
            shown = JSON.stringify(JSON.parse(text), null, 2);
          } catch (_) {
            /* not JSON */
          }
          out.textContent = `${res.status} ${res.statusText}\n\n${shown}`;
        } catch (err) {
          out.textContent = `request failed: ${err.message}`;
        }
      });
      section.append(form, out);
      root.append(section);
    }
  }
})();
