// The jobs page: a table of the tenant's jobs, a status filter, keyset paging (the API's
// cursors) and a refresh every few seconds while a job on the page is queued or running.
"use strict";

(function jobsPage() {
  const params = new URLSearchParams(location.search);
  const PAGE_SIZE = Math.min(200, Math.max(1, Number(params.get("limit")) || 25));  // ?limit= for long lists
  const REFRESH_MS = 3000;
  const body = document.getElementById("jobs-body");
  const filter = document.getElementById("status-filter");
  const prev = document.getElementById("page-prev");
  const next = document.getElementById("page-next");
  const info = document.getElementById("page-info");
  const errorBox = document.getElementById("jobs-error");

  filter.value = params.get("status") || "";
  // cursors[i] is the cursor that loads page i (page 0 has none).
  let cursors = [null];
  let page = 0;
  let nextCursor = null;
  let timer = null;

  function row(job) {
    const pct = Math.round((job.progress.fraction || 0) * 100);
    const metrics = job.latest_metrics || {};
    const link = gf.el("a", { href: "/jobs/" + job.id, text: job.name || job.id.slice(0, 8) });
    const bar = gf.el("div", { class: "progress small", title: `${job.progress.step} / ${job.progress.total}` },
      gf.el("div", { style: `width:${pct}%` }));
    return gf.el("tr", { "data-job-id": job.id },
      gf.el("td", {}, link),
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

  filter.addEventListener("change", () => {
    cursors = [null];
    page = 0;
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("status", filter.value); else url.searchParams.delete("status");
    history.replaceState(null, "", url);
    load();
  });
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
