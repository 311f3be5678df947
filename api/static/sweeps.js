// The sweeps page: a table of the tenant's sweeps (gf.pagedList: status filter, paging, refresh).
"use strict";

(function sweepsPage() {
  function row(sweep) {
    return gf.el("tr", { "data-sweep-id": sweep.id },
      gf.el("td", {}, gf.el("a", { href: "/sweeps/" + sweep.id, text: sweep.name || sweep.id.slice(0, 8) })),
      gf.el("td", {}, gf.badge(sweep.status)),
      gf.el("td", { text: sweep.method }),
      gf.el("td", { text: sweep.trials }),
      gf.el("td", { text: sweep.max_parallel }),
      gf.el("td", { text: gf.time(sweep.created_at) }),
      gf.el("td", { text: gf.time(sweep.finished_at) }));
  }

  gf.pagedList({ path: "/v1/sweeps", row, columns: 7, empty: "No sweeps." });
})();
