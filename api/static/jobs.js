// The jobs page: a table of the tenant's jobs with their tags (gf.pagedList: status, name search
// ?q= and tag ?tag= filters kept in the page's URL, paging, refresh). A sweep's trial links to its
// sweep; a tag is a button that filters the list by itself.
"use strict";

(function jobsPage() {
  let list = null;

  function row(job) {
    const pct = Math.round((job.progress.fraction || 0) * 100);
    const metrics = job.latest_metrics || {};
    const link = gf.el("a", { href: "/jobs/" + job.id, text: job.name || job.id.slice(0, 8) });
    const tags = (job.tags || []).map((tag) => {
      const chip = gf.el("button", { type: "button", class: "tag", "data-tag": tag, text: tag, title: "show jobs tagged " + tag });
      chip.addEventListener("click", () => list.setFilter("tag", tag));
      return chip;
    });
    const bar = gf.el("div", { class: "progress small", title: `${job.progress.step} / ${job.progress.total}` },
      gf.el("div", { style: `width:${pct}%` }));
    const sweep = job.sweep_id
      ? gf.el("a", { class: "sweep-link", href: "/sweeps/" + job.sweep_id, text: job.sweep_id.slice(0, 8) }) : "–";
    return gf.el("tr", { "data-job-id": job.id },
      gf.el("td", {}, link, tags.length ? gf.el("div", { class: "tags" }, ...tags) : null),
      gf.el("td", {}, gf.badge(job.status), job.cancel_requested && gf.isActive(job.status) ? " cancelling" : null),
      gf.el("td", {}, bar, gf.el("span", { class: "muted small-text", text: `${job.progress.step}/${job.progress.total}` })),
      gf.el("td", { text: `${job.attempts}/${job.max_attempts}` }),
      gf.el("td", {}, sweep),
      gf.el("td", { text: gf.time(job.created_at) }),
      gf.el("td", { text: gf.time(job.updated_at) }),
      gf.el("td", { class: "mono", text: gf.num(metrics.loss_d) }),
      gf.el("td", { class: "mono", text: gf.num(metrics.loss_g) }));
  }

  list = gf.pagedList({ path: "/v1/jobs", row, columns: 9, empty: "No jobs.",
                        filters: { "name-search": "q", "tag-filter": "tag" } });
})();
