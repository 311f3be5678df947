// The jobs page: a table of the tenant's jobs with their tags, filters (name search, tag, status:
// the API's ?q=, ?tag=, ?status=, kept in the page's URL), keyset paging (the API's cursors) and a
// refresh every few seconds while a job on the page is queued or running.
"use strict";

(function jobsPage() {
  const params = new URLSearchParams(location.search);
  const PAGE_SIZE = Math.min(200, Math.max(1, Number(params.get("limit")) || 25));  // ?limit= for long lists
  const REFRESH_MS = 3000;
  const body = document.getElementById("jobs-body");
  const filter = document.getElementById("status-filter");
  const search = document.getElementById("name-search");
  const tagFilter = document.getElementById("tag-filter");
  const prev = document.getElementById("page-prev");
  const next = document.getElementById("page-next");
  const info = document.getElementById("page-info");
  const errorBox = document.getElementById("jobs-error");

  filter.value = params.get("status") || "";
  search.value = params.get("q") || "";
  tagFilter.value = params.get("tag") || "";
  // cursors[i] is the cursor that loads page i (page 0 has none).
  let cursors = [null];
  let page = 0;
  let nextCursor = null;
  let timer = null;

  function row(job) {
    const pct = Math.round((job.progress.fraction || 0) * 100);
    const metrics = job.latest_metrics || {};
    const link = gf.el("a", { href: "/jobs/" + job.id, text: job.name || job.id.slice(0, 8) });
    // A tag is a button: it filters the list by itself.
    const tags = (job.tags || []).map((tag) => {
      const chip = gf.el("button", { type: "button", class: "tag", "data-tag": tag, text: tag, title: "show jobs tagged " + tag });
      chip.addEventListener("click", () => { tagFilter.value = tag; filtersChanged(); });
      return chip;
    });
    const bar = gf.el("div", { class: "progress small", title: `${job.progress.step} / ${job.progress.total}` },
      gf.el("div", { style: `width:${pct}%` }));
    return gf.el("tr", { "data-job-id": job.id },
      gf.el("td", {}, link, tags.length ? gf.el("div", { class: "tags" }, ...tags) : null),
      gf.el("td", {}, gf.badge(job.status), job.cancel_requested && gf.isActive(job.status) ? " cancelling" : null),
      gf.el("td", {}, bar, gf.el("span", { class: "muted small-text", text: `${job.progress.step}/${job.progress.total}` })),
      gf.el("td", { text: `${job.attempts}/${job.max_attempts}` }),
      gf.el("td", { text: gf.time(job.created_at) }),
      gf.el("td", { text: gf.time(job.updated_at) }),
      gf.el("td", { class: "mono", text: gf.num(metrics.loss_d) }),
      gf.el("td", { class: "mono", text: gf.num(metrics.loss_g) }));
  }

  async function load() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: PAGE_SIZE });
    if (filter.value) query.set("status", filter.value);
    if (search.value.trim()) query.set("q", search.value.trim());
    if (tagFilter.value.trim()) query.set("tag", tagFilter.value.trim());
    if (cursors[page]) query.set("cursor", cursors[page]);
    let data;
    try {
      data = await gf.json("/v1/jobs?" + query);
      gf.showError(errorBox, null);
    } catch (error) {
      gf.showError(errorBox, error);
      timer = setTimeout(load, REFRESH_MS * 2);
      return;
    }
    body.replaceChildren(...(data.items.length ? data.items.map(row)
      : [gf.el("tr", {}, gf.el("td", { colspan: 8, class: "muted", text: "No jobs." }))]));
    nextCursor = data.next_cursor;
    prev.disabled = page === 0;
    next.disabled = !nextCursor;
    info.textContent = `page ${page + 1}`;
    if (data.items.some((job) => gf.isActive(job.status))) timer = setTimeout(load, REFRESH_MS);
  }

  // A new filter starts again from the first page; the page's URL keeps the filters (links, reloads).
  function filtersChanged() {
    cursors = [null];
    page = 0;
    const url = new URL(location.href);
    for (const [name, value] of [["status", filter.value], ["q", search.value.trim()], ["tag", tagFilter.value.trim()]]) {
      if (value) url.searchParams.set(name, value); else url.searchParams.delete(name);
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
  search.addEventListener("input", typed);
  tagFilter.addEventListener("input", typed);
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
})();
