// The jobs page: a table of the tenant's jobs (gf.pagedList: status filter, paging, refresh).
// A sweep's trial links to its sweep.
"use strict";

(function jobsPage() {
  function row(job) {
    const pct = Math.round((job.progress.fraction || 0) * 100);
    const metrics = job.latest_metrics || {};
    const link = gf.el("a", { href: "/jobs/" + job.id, text: job.name || job.id.slice(0, 8) });
    const bar = gf.el("div", { class: "progress small", title: `${job.progress.step} / ${job.progress.total}` },
      gf.el("div", { style: `width:${pct}%` }));
    const sweep = job.sweep_id
      ? gf.el("a", { class: "sweep-link", href: "/sweeps/" + job.sweep_id, text: job.sweep_id.slice(0, 8) }) : "–";
    return gf.el("tr", { "data-job-id": job.id },
      gf.el("td", {}, link),
      gf.el("td", {}, gf.badge(job.status), job.cancel_requested && gf.isActive(job.status) ? " cancelling" : null),
      gf.el("td", {}, bar, gf.el("span", { class: "muted small-text", text: `${job.progress.step}/${job.progress.total}` })),
      gf.el("td", { text: `${job.attempts}/${job.max_attempts}` }),
      gf.el("td", {}, sweep),
      gf.el("td", { text: gf.time(job.created_at) }),
      gf.el("td", { text: gf.time(job.updated_at) }),
      gf.el("td", { class: "mono", text: gf.num(metrics.loss_d) }),
      gf.el("td", { class: "mono", text: gf.num(metrics.loss_g) }));
  }

  gf.pagedList({ path: "/v1/jobs", row, columns: 9, empty: "No jobs." });
})();
