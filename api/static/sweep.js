// One sweep's page: status and counts, the trials table (sortable by each column), the objective
// against each parameter (a scatter per parameter), every trial's learning curve on one chart
// (pruned trials grey) and the best trial's latest sample grid. Everything comes from the /v1 API
// (/v1/sweeps/{id}, its trials and curves, the best trial's samples); while the sweep is queued or
// running the page polls it.
"use strict";

(function sweepPage() {
  const root = document.getElementById("sweep");
  const sweepId = root.dataset.sweepId;
  const base = "/v1/sweeps/" + sweepId;
  const POLL_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const COMPACT = new Intl.NumberFormat("en", { notation: "compact", maximumSignificantDigits: 3 });
  // Trials in colour by number; pruned ones grey whatever their number.
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                   "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"];
  const GREY = "#c0c4cc";
  const ENDED = ["succeeded", "failed", "cancelled", "pruned"];

  let sweep = null;
  let trials = [];
  let pollTimer = null;
  let sort = { key: "number", descending: false };
  let curvesChart = null;
  let curvesKey = "";
  let scatterCharts = [];
  let scatterKey = "";
  let bestGridKey = "";

  const paths = () => Object.keys((sweep && sweep.spec && sweep.spec.space) || {});
  const paramType = (path) => sweep.spec.space[path].type;
  const colour = (trial) => (trial.status === "pruned" ? GREY : PALETTE[trial.number % PALETTE.length]);

  // A parameter as typed: integers whole, small learning rates as 3e-4 rather than 0.0003000.
  function paramText(value) {
    if (value === null || value === undefined) return "null";
    if (typeof value !== "number") return JSON.stringify(value);
    if (Number.isInteger(value)) return String(value);
    return value !== 0 && Math.abs(value) < 1e-2 ? value.toExponential(2).replace(/\.?0+e/, "e")
      : String(Number(value.toPrecision(4)));
  }

  // ---- the sweep ----------------------------------------------------------------------------------
  function showSweep(data) {
    sweep = data;
    $("sweep-view").hidden = false;
    $("not-found").hidden = true;
    document.title = `${data.name} · sweep · ganforge`;
    $("sweep-name").textContent = data.name;
    const status = $("sweep-status");
    status.textContent = data.status;
    status.className = "badge status-" + data.status;
    status.dataset.status = data.status;
    const ended = ENDED.reduce((n, s) => n + (data.counts[s] || 0), 0);
    $("sweep-progress-bar").style.width = Math.round(100 * ended / Math.max(1, data.trials)) + "%";
    $("sweep-progress-text").textContent = `${ended} of ${data.trials} trials ended`;
    $("sweep-counts").textContent = Object.entries(data.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`)
      .join(", ") || "no trial yet";
    $("sweep-method").textContent = data.method;
    $("sweep-parallel").textContent = data.max_parallel;
    $("sweep-objective").textContent = `${data.objective.metric} (${data.objective.direction})`;
    const failure = $("sweep-failure");
    failure.hidden = !data.error;
    failure.textContent = data.error ? "Error: " + data.error : "";
    $("cancel").hidden = !gf.isActive(data.status);
    $("sweep-spec").textContent = JSON.stringify(data.spec, null, 2);
    showBest(data.best_trial);
  }

  function showBest(best) {
    $("best").hidden = !best;
    $("best-empty").hidden = !!best;
    if (!best) return;
    const link = $("best-link");
    link.href = "/jobs/" + best.job_id;
    link.textContent = `trial ${best.number}`;
    link.dataset.jobId = best.job_id;
    $("best-objective").textContent = `${sweep.objective.metric} = ${gf.num(best.objective)}`;
    $("best-params").textContent = Object.entries(best.params).map(([p, v]) => `${p} = ${paramText(v)}`).join(" · ");
  }

  // The newest fixed-noise grid of the best trial (a signed URL from its samples listing).
  async function loadBestGrid() {
    const best = sweep && sweep.best_trial;
    if (!best) return;
    const data = await gf.json(`/v1/jobs/${best.job_id}/samples`);
    const last = data.items[data.items.length - 1];
    const img = $("best-grid");
    if (!last) { img.hidden = true; return; }
    const key = `${best.job_id}:${last.step}`;
    if (key === bestGridKey) return;  // the same grid: keep the image shown (the URL is fresh each time)
    bestGridKey = key;
    img.dataset.jobId = best.job_id;
    img.dataset.step = String(last.step);
    img.src = last.url;
    img.hidden = false;
    $("best-grid-step").textContent = `step ${last.step} of trial ${best.number}`;
  }

  // ---- the trials table -----------------------------------------------------------------------------
  function columns() {
    return [
      { key: "number", label: "#", value: (t) => t.number },
      { key: "status", label: "Status", value: (t) => t.status },
      { key: "objective", label: sweep.objective.metric, value: (t) => t.objective },
      ...paths().map((path) => ({ key: "param:" + path, label: path, value: (t) => t.params[path] })),
      { key: "reason", label: "Reason", value: (t) => t.reason },
    ];
  }

  // Numbers as numbers, the rest as text; an empty cell sorts last whichever the direction.
  function compare(a, b) {
    const emptyA = a === null || a === undefined, emptyB = b === null || b === undefined;
    if (emptyA || emptyB) return emptyA === emptyB ? 0 : emptyA ? 1 : -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b));
  }

  function sorted() {
    const column = columns().find((c) => c.key === sort.key) || columns()[0];
    const sign = sort.descending ? -1 : 1;
    return [...trials].sort((x, y) => {
      const a = column.value(x), b = column.value(y);
      const emptyA = a === null || a === undefined, emptyB = b === null || b === undefined;
      if (emptyA || emptyB) return compare(a, b) || x.number - y.number;  // empty last, not reversed
      return sign * compare(a, b) || x.number - y.number;
    });
  }

  function drawTable() {
    const cols = columns();
    $("trials-head").replaceChildren(...cols.map((c) => {
      const th = gf.el("th", { "data-key": c.key, class: "sort", title: "sort by " + c.label, text: c.label });
      if (c.key === sort.key) th.setAttribute("aria-sort", sort.descending ? "descending" : "ascending");
      return th;
    }));
    const best = sweep.best_trial ? sweep.best_trial.number : null;
    const rows = sorted().map((t) => gf.el("tr", { "data-number": t.number, "data-status": t.status,
                                               class: t.number === best ? "best" : null },
      gf.el("td", {}, t.job_id ? gf.el("a", { href: "/jobs/" + t.job_id, text: String(t.number) }) : String(t.number)),
      gf.el("td", {}, gf.badge(t.status)),
      gf.el("td", { class: "mono", "data-value": t.objective ?? "", text: gf.num(t.objective) }),
      ...paths().map((path) => gf.el("td", { class: "mono", text: paramText(t.params[path]) })),
      gf.el("td", { class: "muted", text: t.reason && t.status !== "succeeded" ? t.reason : "" })));
    $("trials-body").replaceChildren(...(rows.length ? rows
      : [gf.el("tr", {}, gf.el("td", { colspan: cols.length, class: "muted", text: "No trial yet." }))]));
  }

  $("trials-head").addEventListener("click", (event) => {
    const th = event.target.closest("th[data-key]");
    if (!th) return;
    const key = th.dataset.key;
    // A new column starts with its best first: the objective in the direction of the search.
    const bestFirst = key === "objective" && sweep.objective.direction === "maximize";
    sort = { key, descending: key === sort.key ? !sort.descending : bestFirst };
    drawTable();
  });

  // ---- charts ---------------------------------------------------------------------------------------
  function chartWidth(node) {
    return Math.max(260, Math.floor(node.getBoundingClientRect().width) || 360);
  }

  const yAxis = () => ({ size: 56, values: (u, ticks) => ticks.map((v) => COMPACT.format(v)) });

  // Every trial's eval/<objective> series on one chart; x is the step. uPlot wants one x array:
  // merge the steps, null where a trial has no evaluation.
  function drawCurves(curves) {
    const node = $("chart-curves");
    const drawn = curves.items.filter((c) => c.steps.length);
    $("curves-empty").hidden = drawn.length > 0;
    node.hidden = drawn.length === 0;
    const xs = [...new Set(drawn.flatMap((c) => c.steps))].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const data = [xs, ...drawn.map((c) => {
      const ys = new Array(xs.length).fill(null);
      c.steps.forEach((step, i) => { ys[index.get(step)] = c.values[i]; });
      return ys;
    })];
    node.dataset.points = String(drawn.reduce((n, c) => n + c.steps.length, 0));
    node.dataset.series = String(drawn.length);
    node.dataset.pruned = drawn.filter((c) => c.status === "pruned").map((c) => c.number).join(",");
    // New trials or a changed status (a colour): draw anew; only new points: setData.
    const key = drawn.map((c) => `${c.number}:${c.status}`).join(",");
    if (curvesChart && key === curvesKey) { curvesChart.setData(data); return; }
    if (curvesChart) curvesChart.destroy();
    curvesChart = null;
    curvesKey = key;
    if (!drawn.length) return;
    const best = sweep.best_trial ? sweep.best_trial.number : null;
    const series = [{ label: "step" }, ...drawn.map((c) => ({
      label: `#${c.number} ${c.status}`, stroke: colour(c), width: c.number === best ? 3 : 1.5, spanGaps: true,
      points: { show: true, size: 4 }, value: (u, v) => (v === null || v === undefined ? "–" : gf.num(v)),
    }))];
    curvesChart = new uPlot({
      width: chartWidth(node), height: 240, series,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { ...yAxis(), label: curves.metric }],
      legend: { live: false },
    }, data, node);
  }

  // One scatter a parameter: x the trial's value, y its objective, succeeded trials only. A
  // choice's values are categories at 0..n-1; a log-uniform parameter gets a log axis.
  function scatterData(path) {
    const spec = sweep.spec.space[path];
    const done = trials.filter((t) => t.status === "succeeded" && typeof t.objective === "number");
    let labels = null;
    let toX = (v) => v;
    if (spec.type === "choice") {
      labels = spec.values.map(paramText);
      const keys = spec.values.map((v) => JSON.stringify(v));
      toX = (v) => keys.indexOf(JSON.stringify(v));
    }
    const points = done.map((t) => [toX(t.params[path]), t.objective]).filter(([x]) => typeof x === "number")
      .sort((a, b) => a[0] - b[0]);  // uPlot's x must ascend
    return { labels, data: [points.map((p) => p[0]), points.map((p) => p[1])] };
  }

  function drawScatters() {
    const all = paths();
    $("scatter-card").hidden = all.length === 0;
    const key = all.join("|");
    if (key !== scatterKey) {  // build the chart slots once per set of parameters
      scatterKey = key;
      scatterCharts.forEach((c) => c && c.destroy());
      scatterCharts = all.map(() => null);
      $("scatters").replaceChildren(...all.map((path, i) => gf.el("figure", {},
        gf.el("figcaption", { text: `${sweep.objective.metric} vs ${path}` }),
        gf.el("div", { id: "scatter-" + i, class: "chart scatter", "data-param": path, "data-points": "0" }))));
    }
    all.forEach((path, i) => {
      const node = $("scatter-" + i);
      const { labels, data } = scatterData(path);
      node.dataset.points = String(data[0].length);
      if (scatterCharts[i]) { scatterCharts[i].setData(data); return; }
      if (!data[0].length) return;  // drawn once a trial has succeeded
      const type = paramType(path);
      const x = type === "log_uniform" ? { time: false, distr: 3 }
        : labels ? { time: false, range: [-0.5, labels.length - 0.5] } : { time: false };
      const xAxis = labels
        ? { label: path, splits: () => labels.map((_, j) => j), values: (u, ticks) => ticks.map((t) => labels[t] ?? "") }
        : { label: path, values: (u, ticks) => ticks.map(paramText) };
      scatterCharts[i] = new uPlot({
        width: chartWidth(node), height: 200,
        series: [{ label: path }, { label: sweep.objective.metric, stroke: PALETTE[0], fill: PALETTE[0],
                                    paths: () => null, points: { show: true, size: 9, fill: PALETTE[0] } }],
        scales: { x }, axes: [xAxis, yAxis()], legend: { show: false }, cursor: { drag: { x: false, y: false } },
      }, data, node);
    });
  }

  window.addEventListener("resize", () => {
    if (curvesChart) curvesChart.setSize({ width: chartWidth($("chart-curves")), height: 240 });
    scatterCharts.forEach((c, i) => c && c.setSize({ width: chartWidth($("scatter-" + i)), height: 200 }));
  });

  // ---- cancel and polling -----------------------------------------------------------------------------
  $("cancel").addEventListener("click", async () => {
    $("cancel").disabled = true;
    try {
      showSweep(await gf.json(`${base}/cancel`, { method: "POST" }));
      refresh();
    } catch (error) {
      gf.showError($("sweep-error"), error);
    } finally {
      $("cancel").disabled = false;
    }
  });

  function notFound() {
    clearTimeout(pollTimer);
    $("sweep-view").hidden = true;
    $("not-found").hidden = false;
    document.title = "Sweep not found · ganforge";
  }

  async function refresh() {
    clearTimeout(pollTimer);
    const [sweepResult, trialsResult, curvesResult] = await Promise.allSettled(
      [gf.json(base), gf.json(`${base}/trials`), gf.json(`${base}/curves`)]);
    if (sweepResult.status === "rejected") {
      const error = sweepResult.reason;
      if (error.status === 404) return notFound();
      gf.showError($("sweep-error"), error);
      pollTimer = setTimeout(refresh, POLL_MS * 2);
      return;
    }
    const previous = sweep ? sweep.status : null;
    showSweep(sweepResult.value);
    let failed = [trialsResult, curvesResult].find((r) => r.status === "rejected");
    if (trialsResult.status === "fulfilled") {
      trials = trialsResult.value.items;
      drawTable();
      drawScatters();
    }
    if (curvesResult.status === "fulfilled") drawCurves(curvesResult.value);
    try {
      await loadBestGrid();
    } catch (error) {
      failed = failed || { reason: error };
    }
    gf.showError($("sweep-error"), failed ? failed.reason : null);
    if (previous && gf.isActive(previous) && !gf.isActive(sweep.status)) {
      pollTimer = setTimeout(refresh, 0);  // it has just ended: read its last trial's figures once more
      return;
    }
    root.dataset.loaded = sweep.status;  // tests wait on this
    if (gf.isActive(sweep.status)) pollTimer = setTimeout(refresh, POLL_MS);
  }

  window.addEventListener("gf-api-key", refresh);
  refresh();
})();
