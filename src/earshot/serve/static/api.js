// The one way the page talks to the server: JSON in, JSON out, and an Error whose message is
// the server's sentence when a request fails. What the server offers is read once from its
// OpenAPI description, so a feature whose route or parameter is missing stays hidden.

export async function api(url, options = {}) {
  const res = await fetch(url, { credentials: "same-origin", ...options });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const message = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    throw Object.assign(new Error(message), { status: res.status });
  }
  return body;
}

let offered = null;

/** {routes: Set of paths, params(path): Set of query parameter names} from /openapi.json. */
export function features() {
  if (!offered) {
    offered = api("/openapi.json")
      .then((spec) => {
        const paths = spec.paths || {};
        return {
          routes: new Set(Object.keys(paths)),
          params(path, method = "get") {
            const op = (paths[path] || {})[method] || {};
            return new Set((op.parameters || []).map((p) => p.name));
          },
        };
      })
      .catch(() => ({ routes: new Set(), params: () => new Set() }));
  }
  return offered;
}
