// Shared by every dashboard page: the API key kept in sessionStorage, fetch() wrappers that send
// it as a Bearer token (and nothing when no key is stored: embedded mode needs none), and small
// formatting helpers. Plain browser JavaScript, no build step.
"use strict";

const KEY_STORAGE = "ganforge.apiKey";

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    // 401: the deployment requires a key and none (or a wrong one) was sent.
    const hint = status === 401 ? " Enter an API key in the header bar." : "";
    super((error.message || `HTTP ${status}`) + hint);
    this.status = status;
    this.code = error.code || "http_" + status;
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

const gf = {
  apiKey() {
    try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch (e) { return ""; }
  },

  headers(extra) {
    const headers = Object.assign({}, extra || {});
    const key = gf.apiKey();
    if (key) headers["Authorization"] = "Bearer " + key;
    return headers;
  },

  // A request to the JSON API; resolves to the raw Response, rejects with ApiError on 4xx/5xx.
  async request(path, options) {
    options = options || {};
    const init = { method: options.method || "GET", headers: gf.headers(options.headers) };
    if (options.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = typeof options.json === "string" ? options.json : JSON.stringify(options.json);
    } else if (options.body !== undefined) {  // a File or Blob, sent as it is (an archive upload)
      init.headers["Content-Type"] = options.contentType;
      init.body = options.body;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { error: { code: "network", message: "the service cannot be reached: " + e.message } });
    }
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (e) { /* not the envelope */ }
      throw new ApiError(response.status, body);
    }
    return response;
  },

  async json(path, options) {
    return (await gf.request(path, options)).json();
  },

  // Images that need the Authorization header cannot be plain <img src>: fetch them as a blob.
  async blobUrl(path, options) {
    const blob = await (await gf.request(path, options)).blob();
    return URL.createObjectURL(blob);
  },

  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      // Through the CSSOM: the page's CSP (style-src 'self') refuses style attributes set as markup.
      else if (name === "style") node.style.cssText = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },

  badge(status) {
    return gf.el("span", { class: "badge status-" + status, "data-status": status, text: status });
  },

  time(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  },

  num(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (typeof value !== "number") return String(value);
    return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toPrecision(digits || 4);
  },

  showError(node, error) {
    node.textContent = error ? error.message || String(error) : "";
    node.hidden = !error;
  },

  isActive(status) {
    return status === "queued" || status === "running";
  },

  // A list page (jobs, sweeps): a table of the tenant's items from ``path``, a status filter kept
  // in the URL, keyset paging (the API's cursors; ?limit= for long lists) and a refresh every few
  // seconds while an item on the page is queued or running.
  // A paged table over a list endpoint: the status filter and any text filters (`filters`: input
  // id → query parameter, e.g. the jobs page's name search ?q= and tag ?tag=) are kept in the page's
  // URL; keyset paging with the API's cursors; a refresh every few seconds while an item is live.
  // Returns { setFilter(param, value) } for rows that filter by a value of theirs (a tag chip).
  pagedList({ path, row, columns, empty, filters = {} }) {
    const params = new URLSearchParams(location.search);
    const pageSize = Math.min(200, Math.max(1, Number(params.get("limit")) || 25));
    const REFRESH_MS = 3000;
    const $ = (id) => document.getElementById(id);
    const body = $(path.slice(4) + "-body");  // /v1/jobs → #jobs-body
    const errorBox = $(path.slice(4) + "-error");
    const filter = $("status-filter"), prev = $("page-prev"), next = $("page-next"), info = $("page-info");
    const inputs = Object.entries(filters).map(([id, param]) => [$(id), param]);
    filter.value = params.get("status") || "";
    for (const [input, param] of inputs) input.value = params.get(param) || "";
    // cursors[i] is the cursor that loads page i (page 0 has none).
    let cursors = [null];
    let page = 0;
    let nextCursor = null;
    let timer = null;

    function current() {
      return [["status", filter.value], ...inputs.map(([input, param]) => [param, input.value.trim()])];
    }

    async function load() {
      clearTimeout(timer);
      const query = new URLSearchParams({ limit: pageSize });
      for (const [param, value] of current()) if (value) query.set(param, value);
      if (cursors[page]) query.set("cursor", cursors[page]);
      let data;
      try {
        data = await gf.json(path + "?" + query);
        gf.showError(errorBox, null);
      } catch (error) {
        gf.showError(errorBox, error);
        timer = setTimeout(load, REFRESH_MS * 2);
        return;
      }
      body.replaceChildren(...(data.items.length ? data.items.map(row)
        : [gf.el("tr", {}, gf.el("td", { colspan: columns, class: "muted", text: empty }))]));
      nextCursor = data.next_cursor;
      prev.disabled = page === 0;
      next.disabled = !nextCursor;
      info.textContent = `page ${page + 1}`;
      if (data.items.some((item) => gf.isActive(item.status))) timer = setTimeout(load, REFRESH_MS);
    }

    // A new filter starts again from the first page; the page's URL keeps the filters (links, reloads).
    function filtersChanged() {
      cursors = [null];
      page = 0;
      const url = new URL(location.href);
      for (const [param, value] of current()) {
        if (value) url.searchParams.set(param, value); else url.searchParams.delete(param);
      }
      history.replaceState(null, "", url);
      load();
    }

    let typing = null;
    function typed() {  // search as one types, without a request per key
      clearTimeout(typing);
      typing = setTimeout(filtersChanged, 300);
    }
    filter.addEventListener("change", filtersChanged);
    for (const [input] of inputs) input.addEventListener("input", typed);
    next.addEventListener("click", () => {
      if (!nextCursor) return;
      cursors[page + 1] = nextCursor;
      page += 1;
      load();
    });
    prev.addEventListener("click", () => {
      if (page === 0) return;
      page -= 1;
      load();
    });
    window.addEventListener("gf-api-key", () => { cursors = [null]; page = 0; load(); });
    load();
    return {
      setFilter(param, value) {
        for (const [input, name] of inputs) if (name === param) input.value = value;
        filtersChanged();
      },
    };
  },
};

// The header bar's API key field.
(function apiKeyField() {
  const form = document.getElementById("api-key-form");
  if (!form) return;
  const input = document.getElementById("api-key");
  const state = document.getElementById("api-key-state");
  const show = () => { state.textContent = gf.apiKey() ? "key stored for this tab" : ""; };
  input.value = gf.apiKey();
  show();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      if (input.value.trim()) sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) { /* storage disabled: requests go without a key */ }
    show();
    window.dispatchEvent(new Event("gf-api-key"));
  });
  document.getElementById("api-key-clear").addEventListener("click", () => {
    input.value = "";
    try { sessionStorage.removeItem(KEY_STORAGE); } catch (e) { /* nothing stored */ }
    show();
    window.dispatchEvent(new Event("gf-api-key"));
  });
})();
