// One job's page: status, history, live charts (uPlot), evaluation figures, the sample-grid
// timeline, checkpoints, the job's log lines, cancel, and the generate / interpolate panel. Everything comes from
// the /v1 API; while the job is queued or running the page polls it.
"use strict";

(function jobPage() {
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const base = "/v1/jobs/" + jobId;
  const POLL_MS = 2000;
  // Server-side downsampling: a chart a few hundred pixels wide needs no more points than this,
  // and a 12 000-step job then costs the same to draw as a 600-step one.
  const MAX_POINTS = 600;
  const METRICS = ["loss_d", "loss_g", "d_real", "d_fake", "acc_real", "acc_fake", "acc_d", "images_per_s",
                   "images_per_s_per_device"];
  const $ = (id) => document.getElementById(id);
  const COMPACT = new Intl.NumberFormat("en", { notation: "compact", maximumSignificantDigits: 3 });

  let job = null;
  let pollTimer = null;
  let samples = [];
  let charts = {};
  let playTimer = null;
  let checkpointsKey = "";

  // ---- job, status, events --------------------------------------------------------------------
  function showJob(data) {
    job = data;
    $("job-view").hidden = false;
    $("not-found").hidden = true;
    document.title = `${data.name || data.id.slice(0, 8)} · ganforge`;
    $("job-name").textContent = data.name || data.id.slice(0, 8);
    const status = $("job-status");
    status.textContent = data.status + (data.cancel_requested && gf.isActive(data.status) ? " (cancelling)" : "");
    status.className = "badge status-" + data.status;
    status.dataset.status = data.status;
    const pct = Math.round((data.progress.fraction || 0) * 100);
    $("job-progress-bar").style.width = pct + "%";
    $("job-progress-text").textContent = `step ${data.progress.step} of ${data.progress.total} (${pct} %)`;
    $("job-attempts").textContent = `${data.attempts}/${data.max_attempts}`;
    $("job-queue").textContent = data.queue;
    $("job-devices").textContent = data.devices || 1;
    $("job-sweep").hidden = !data.sweep_id;
    if (data.sweep_id) {
      $("job-sweep-link").href = "/sweeps/" + data.sweep_id;
      $("job-sweep-link").textContent = data.sweep_id.slice(0, 8);
    }
    const waiting = $("job-waiting");
    waiting.hidden = !data.waiting_reason;
    waiting.textContent = data.waiting_reason ? "Waiting: " + data.waiting_reason : "";
    const failure = $("job-failure");
    failure.hidden = !data.error;
    failure.textContent = data.error ? "Error: " + data.error : "";
    $("cancel").hidden = !gf.isActive(data.status) || data.cancel_requested;
    const tags = data.tags || [];
    $("job-tags").hidden = !tags.length;
    $("job-tags").replaceChildren(...tags.map((tag) => gf.el("a", { class: "tag", href: "/?tag=" + encodeURIComponent(tag), text: tag })));
    $("job-notes").hidden = !data.notes;
    $("job-notes").textContent = data.notes || "";
    $("events").replaceChildren(...data.events.map((e) => gf.el("tr", {},
      gf.el("td", { text: gf.time(e.at) }), gf.el("td", { text: e.from || "" }), gf.el("td", {}, gf.badge(e.to)),
      gf.el("td", { text: e.attempt }), gf.el("td", { text: e.message || "" }))));
    $("job-spec").textContent = JSON.stringify(data.spec, null, 2);
    const conditional = data.spec && data.spec.model && data.spec.model.conditioning && data.spec.model.conditioning !== "none";
    $("gen-label-wrap").hidden = !conditional;
    showEvaluation(data.evaluation);
    showDatasetSummary(data.dataset_summary, data.spec && data.spec.dataset);
    showHealth(data);
  }

  // What the worker decoded for an image_folder job (null before it has, and for other datasets).
  function showDatasetSummary(summary, dataset) {
    const card = $("dataset-card");
    if (!summary || typeof summary !== "object") { card.hidden = true; return; }
    const out = [
      figure("images used", String(summary.images), "images"),
      figure("files skipped", String(summary.skipped), "skipped"),
      figure("files in the archive", String(summary.files), "files"),
      figure("size", sizeText(summary.bytes || 0), "bytes"),
    ];
    if (summary.image_size) {
      out.push(figure("decoded at", `${summary.image_size} px, ${summary.channels === 1 ? "grayscale" : "RGB"}`, "image_size"));
    }
    const hit = summary.cache === "hit";
    out.push(figure("decode cache", hit ? "hit" : `miss (${gf.num(summary.decode_seconds || 0, 3)} s)`, "cache"));
    if (dataset && dataset.upload_id) out.push(figure("upload", dataset.upload_id.slice(0, 8), "upload_id"));
    $("dataset-summary").replaceChildren(...out);
    const classes = Array.isArray(summary.classes) ? summary.classes : [];
    const line = $("dataset-classes");
    line.hidden = !classes.length;
    const usage = summary.labels === "folders" ? "used as labels (label i is the i-th)" : "not used as labels";
    line.textContent = classes.length ? `${classes.length} class folders, ${usage}: ${classes.join(", ")}` : "";
    card.hidden = false;
  }

  // The "GAN health" row: ok, the detectors' warnings, or the one that stopped the job.
  function showHealth(data) {
    const findings = data.health || [];
    const health = (data.spec && data.spec.train && data.spec.train.health) || {};
    let state = "ok";
    let text = "ok";
    if (data.stop_reason) {
      state = "stopped";
      text = "stopped: " + data.stop_reason;
    } else if (findings.length) {
      state = "warning";
      text = findings.length + (findings.length === 1 ? " warning" : " warnings");
    } else if (health.enabled === false) {
      state = "off";
      text = "off (non-finite losses only)";
    }
    const badge = $("job-health-badge");
    badge.textContent = text;
    badge.className = "badge health-" + state;
    badge.dataset.health = state;
    $("job-health-list").replaceChildren(...findings.map((f) => gf.el("li", { "data-detector": f.detector },
      gf.el("span", { class: "mono", text: "step " + f.step + " " }), gf.el("strong", { text: f.detector }),
      gf.el("span", { text: ` (${f.action}): ${f.message}` }))));
  }

  function figure(label, value, key) {
    return gf.el("div", { class: "figure", "data-key": key },
      gf.el("div", { class: "figure-value", text: value }), gf.el("div", { class: "figure-label", text: label }));
  }

  function showEvaluation(evaluation) {
    const card = $("evaluation-card");
    if (!evaluation || typeof evaluation !== "object" || !Object.keys(evaluation).length) { card.hidden = true; return; }
    const out = [];
    const e = evaluation;
    const pct = (v) => (typeof v === "number" ? v.toFixed(1) + " %" : "–");
    // The 2-D mixtures (ring8, grid25): modes captured and high-quality samples.
    if ("modes" in e) out.push(figure("modes captured", `${e.modes} / ${e.n_modes ?? "?"}`, "modes"));
    if ("modes_min10" in e) out.push(figure("modes with ≥ 10 samples", `${e.modes_min10} / ${e.n_modes ?? "?"}`, "modes_min10"));
    if ("hq_percent" in e) out.push(figure("high-quality samples", pct(e.hq_percent), "hq_percent"));
    if ("reverse_kl" in e) out.push(figure("reverse KL over modes", gf.num(e.reverse_kl, 3), "reverse_kl"));
    // Images: domain FID from the small classifier's features, class coverage, label accuracy.
    if ("domain_fid" in e) out.push(figure("domain FID", gf.num(e.domain_fid, 4), "domain_fid"));
    if ("classes_covered" in e) {
      const k = Array.isArray(e.class_histogram) ? e.class_histogram.length : "?";
      out.push(figure("classes covered", `${e.classes_covered} / ${k}`, "classes_covered"));
    }
    // KID and precision / recall / density / coverage, in the same classifier feature space as the FID.
    if (typeof e.kid === "number") {
      const std = typeof e.kid_std === "number" ? ` ± ${gf.num(e.kid_std, 2)}` : "";
      out.push(figure("KID", gf.num(e.kid, 3) + std, "kid"));
    }
    for (const name of ["precision", "recall", "density", "coverage"]) {
      if (typeof e[name] === "number") out.push(figure(name, gf.num(e[name], 3), name));
    }
    if ("label_accuracy" in e) out.push(figure("label accuracy", pct(100 * e.label_accuracy), "label_accuracy"));
    if ("mean_confidence" in e) out.push(figure("mean classifier confidence", pct(100 * e.mean_confidence), "mean_confidence"));
    // Discriminator rejection sampling (sampling.rejection): the figures above are for the kept samples.
    if (e.rejection && typeof e.rejection === "object" && typeof e.rejection.acceptance === "number") {
      out.push(figure("kept by rejection sampling", pct(100 * e.rejection.acceptance), "rejection_acceptance"));
      const raw = e.raw && typeof e.raw === "object" ? e.raw : {};
      if ("hq_percent" in raw) out.push(figure("high-quality, raw generator", pct(raw.hq_percent), "raw_hq_percent"));
      if ("domain_fid" in raw) out.push(figure("domain FID, raw generator", gf.num(raw.domain_fid, 4), "raw_domain_fid"));
    }
    if ("n_samples" in e) out.push(figure("samples evaluated", String(e.n_samples), "n_samples"));
    const shown = new Set(["modes", "modes_min10", "hq_percent", "reverse_kl", "domain_fid", "classes_covered",
      "label_accuracy", "mean_confidence", "n_samples", "n_modes", "class_histogram", "mode_counts",
      "kid", "kid_std", "precision", "recall", "density", "coverage"]);
    for (const [key, value] of Object.entries(e)) {
      if (!shown.has(key) && (typeof value === "number" || typeof value === "string")) out.push(figure(key, gf.num(value), key));
    }
    $("evaluation").replaceChildren(...out);
    card.hidden = out.length === 0;
  }

  // ---- charts -----------------------------------------------------------------------------------
  const CHARTS = {
    "chart-loss": { series: [["loss_d", "#1f77b4"], ["loss_g", "#ff7f0e"]] },
    "chart-dprob": { series: [["d_real", "#2ca02c", "D(x)"], ["d_fake", "#d62728", "D(G(z))"]], range: [0, 1] },
    "chart-acc": { series: [["acc_real", "#2ca02c", "acc real"], ["acc_fake", "#d62728", "acc fake"], ["acc_d", "#9467bd", "acc mean"]],
                   half: true, range: [0, 1] },
    "chart-speed": { series: [["images_per_s", "#8c564b", "images/s"], ["images_per_s_per_device", "#7f7f7f", "per device"]] },
  };

  // uPlot wants one x array shared by all series: merge the steps, null where a series has none.
  function align(names, series) {
    const steps = new Set();
    for (const name of names) for (const s of (series[name] || { steps: [] }).steps) steps.add(s);
    const xs = [...steps].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const ys = names.map((name) => {
      const out = new Array(xs.length).fill(null);
      const s = series[name] || { steps: [], values: [] };
      s.steps.forEach((step, i) => { out[index.get(step)] = s.values[i]; });
      return out;
    });
    return [xs, ...ys];
  }

  function chartWidth(node) {
    return Math.max(260, Math.floor(node.getBoundingClientRect().width) || 360);
  }

  function drawCharts(series) {
    // The series may arrive before the job itself: the view must be laid out to size the charts
    // (a 404 for an unknown job never gets here: its metrics are a 404 too).
    $("job-view").hidden = false;
    let any = false;
    for (const [id, conf] of Object.entries(CHARTS)) {
      const node = $(id);
      const names = conf.series.map((s) => s[0]);
      const data = align(names, series);
      const present = names.some((n) => series[n] && series[n].steps.length);
      node.closest("figure").hidden = !present;
      if (!present) continue;
      any = true;
      if (conf.half) data.push(data[0].map(() => 0.5));  // the 50 % line: D cannot tell real from fake
      node.dataset.points = String(data[0].length);
      if (charts[id]) { charts[id].setData(data); continue; }
      const uSeries = [{ label: "step" }, ...conf.series.map(([name, stroke, label]) => ({
        label: label || name, stroke, width: 1.5, spanGaps: true,
        value: (u, v) => (v === null || v === undefined ? "–" : gf.num(v)),
      }))];
      if (conf.half) uSeries.push({ label: "50 %", stroke: "#888", width: 1, dash: [6, 4], points: { show: false } });
      const opts = {
        width: chartWidth(node), height: 200, series: uSeries,
        scales: { x: { time: false }, ...(conf.range ? { y: { range: conf.range } } : {}) },
        // Compact tick labels (12k, not a clipped 12,000): the y axis has a fixed width.
        axes: [{ label: "step" }, { size: 56, values: (u, ticks) => ticks.map((v) => COMPACT.format(v)) }],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
      };
      charts[id] = new uPlot(opts, data, node);
    }
    $("charts-empty").hidden = any;
  }

  async function loadMetrics() {
    const query = new URLSearchParams({ names: METRICS.join(","), max_points: MAX_POINTS });
    const data = await gf.json(`${base}/metrics?${query}`);
    drawCharts(data.series);
  }

  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(charts)) chart.setSize({ width: chartWidth($(id)), height: 200 });
  });

  // ---- timeline -----------------------------------------------------------------------------------
  function showFrame(index) {
    const item = samples[index];
    if (!item) return;
    const img = $("timeline-image");
    img.dataset.step = String(item.step);
    img.src = item.url;  // a signed URL from the listing: no credentials needed
    $("timeline-step").textContent = `step ${item.step} (${index + 1}/${samples.length})`;
  }

  async function loadSamples() {
    const data = await gf.json(`${base}/samples`);
    const slider = $("timeline-slider");
    const atEnd = samples.length === 0 || Number(slider.value) === samples.length - 1;
    const changed = data.items.length !== samples.length;
    samples = data.items;  // fresh URLs each time (they expire)
    $("timeline").hidden = samples.length === 0;
    $("timeline-empty").hidden = samples.length > 0;
    $("gif-download").disabled = samples.length === 0;
    slider.max = String(Math.max(0, samples.length - 1));
    if (changed && atEnd && !playTimer) {
      slider.value = slider.max;  // follow the newest grid unless the user is looking back
      showFrame(samples.length - 1);
    }
  }

  $("timeline-slider").addEventListener("input", (event) => showFrame(Number(event.target.value)));

  $("timeline-play").addEventListener("click", () => {
    const button = $("timeline-play");
    const slider = $("timeline-slider");
    if (playTimer) {
      clearInterval(playTimer);
      playTimer = null;
      button.textContent = "▶ Play";
      return;
    }
    if (Number(slider.value) >= samples.length - 1) slider.value = "0";
    showFrame(Number(slider.value));
    button.textContent = "❚❚ Pause";
    playTimer = setInterval(() => {
      const i = Number(slider.value) + 1;
      if (i >= samples.length) {
        clearInterval(playTimer);
        playTimer = null;
        button.textContent = "▶ Play";
        return;
      }
      slider.value = String(i);
      showFrame(i);
    }, 400);
  });

  $("gif-download").addEventListener("click", async () => {
    const button = $("gif-download");
    button.disabled = true;
    try {
      const url = await gf.blobUrl(`${base}/samples.gif`);
      const a = gf.el("a", { href: url, download: `timeline-${jobId.slice(0, 8)}.gif` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      gf.showError($("job-error"), error);
    } finally {
      button.disabled = samples.length === 0;
    }
  });

  // ---- checkpoints and the generate panel ---------------------------------------------------------
  function sizeText(bytes) {
    return bytes >= 1 << 20 ? (bytes / (1 << 20)).toFixed(1) + " MiB" : (bytes / 1024).toFixed(0) + " KiB";
  }

  async function loadCheckpoints() {
    const data = await gf.json(`${base}/checkpoints`);
    const items = data.items.map((c) => gf.el("li", {},
      gf.el("a", { href: c.url, download: `step-${c.step}.pt`, "data-step": c.step, text: `checkpoint at step ${c.step}` }),
      gf.el("span", { class: "muted", text: ` ${sizeText(c.bytes)}` })));
    if (data.final) {
      items.push(gf.el("li", {}, gf.el("a", { href: data.final.url, download: "generator.pt", "data-step": "final",
        text: `final generator (step ${data.final.step})` }), gf.el("span", { class: "muted", text: ` ${sizeText(data.final.bytes)}` })));
    }
    $("checkpoints").replaceChildren(...(items.length ? items : [gf.el("li", { class: "muted", text: "none yet" })]));
    // Rebuild the select only when the set changed, so a choice the user made survives polling.
    const key = data.items.map((c) => c.step).join(",") + "|" + (data.final ? data.final.step : "");
    if (key === checkpointsKey) return;
    checkpointsKey = key;
    const select = $("gen-checkpoint");
    const chosen = select.value;
    const options = [gf.el("option", { value: "", text: data.final ? "final generator" : "latest checkpoint" })];
    for (const c of [...data.items].reverse()) options.push(gf.el("option", { value: String(c.step), text: `step ${c.step}` }));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
    $("generate").disabled = !data.items.length && !data.final;
    $("interpolate").disabled = !data.items.length && !data.final;
  }

  function intValue(id) {
    const raw = $(id).value.trim();
    return raw === "" ? null : Number(raw);
  }

  function errorText(error) {
    const details = error.details && error.details.length
      ? " (" + error.details.map((d) => `${d.field}: ${d.problem}`).join("; ") + ")" : "";
    return { message: (error.message || String(error)) + (error.details && error.details.length > 1 ? details : "") };
  }

  async function showPng(imgId, errorId, path, body) {
    const img = $(imgId);
    gf.showError($(errorId), null);
    try {
      const url = await gf.blobUrl(path, { method: "POST", json: body });
      if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      img.src = url;
      img.hidden = false;
    } catch (error) {
      gf.showError($(errorId), errorText(error));
    }
  }

  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { n: intValue("gen-n"), seed: intValue("gen-seed") ?? 0 };
    const checkpoint = $("gen-checkpoint").value;
    if (checkpoint !== "") body.checkpoint = Number(checkpoint);
    const label = intValue("gen-label");
    if (!$("gen-label-wrap").hidden && label !== null) body.labels = label;
    showPng("generate-image", "generate-error", `${base}/generate`, body);
  });

  $("interp-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { seed_a: intValue("interp-a"), seed_b: intValue("interp-b"), steps: intValue("interp-steps") };
    const checkpoint = $("gen-checkpoint").value;
    if (checkpoint !== "") body.checkpoint = Number(checkpoint);
    const label = intValue("gen-label");
    if (!$("gen-label-wrap").hidden && label !== null) body.label = label;
    showPng("interp-image", "interp-error", `${base}/interpolate`, body);
  });

  // The bundle through fetch (the API key rides in a header, which a plain link cannot carry),
  // handed to the browser as a file.
  $("download-bundle").addEventListener("click", async () => {
    const button = $("download-bundle");
    button.disabled = true;
    try {
      const response = await gf.request(`${base}/bundle`);
      const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
      const url = URL.createObjectURL(await response.blob());
      const link = gf.el("a", { href: url, download: match ? match[1] : `job-${jobId.slice(0, 8)}.zip`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      gf.showError($("job-error"), null);
    } catch (error) {
      gf.showError($("job-error"), error);
    } finally {
      button.disabled = false;
    }
  });

  $("cancel").addEventListener("click", async () => {
    $("cancel").disabled = true;
    try {
      showJob(await gf.json(`${base}/cancel`, { method: "POST" }));
      schedule();
    } catch (error) {
      gf.showError($("job-error"), error);
    } finally {
      $("cancel").disabled = false;
    }
  });

  // ---- log lines (GET /logs?since=: the worker's lines for this job and each rank's) -------------
  let logCursor = 0;
  let logTail = 0;  // fetches left after the job ended: its last lines land just after the status

  let logLoading = null;  // one read at a time: two from the same cursor would show lines twice

  function loadLogs() {
    if (!logLoading) logLoading = readLogs().finally(() => { logLoading = null; });
    return logLoading;
  }

  async function readLogs() {
    for (let page = 0; page < 20; page++) {  // at most 20 000 lines a refresh
      const body = await gf.json(base + "/logs?since=" + logCursor);
      if (body.lines.length) {
        const pre = $("log-lines");
        const text = body.lines.map((line) =>
          line.time + "  " + line.level.padEnd(7) + (line.rank === null ? "" : " [rank " + line.rank + "]") + " "
          + line.message).join("\n") + "\n";
        pre.appendChild(document.createTextNode(text));  // text, never HTML
        pre.hidden = false;
        $("log-empty").hidden = true;
        pre.dataset.lines = String(body.next);
        if ($("log-follow").checked) pre.scrollTop = pre.scrollHeight;
      }
      logCursor = body.next;
      if (!body.more) break;
    }
  }

  function resetLogs() {
    logCursor = 0;
    $("log-lines").textContent = "";
    $("log-lines").hidden = true;
    $("log-empty").hidden = false;
  }

  function tailLogs() {
    if (logTail <= 0) return;
    logTail -= 1;
    setTimeout(() => loadLogs().then(tailLogs, () => {}), POLL_MS);
  }

  // ---- polling ------------------------------------------------------------------------------------
  function notFound() {
    clearTimeout(pollTimer);
    $("job-view").hidden = true;
    $("not-found").hidden = false;
    document.title = "Job not found · ganforge";
  }

  function schedule() {
    clearTimeout(pollTimer);
    if (job && gf.isActive(job.status)) pollTimer = setTimeout(refresh, POLL_MS);
  }

  async function refresh() {
    // All four requests at once: the charts, timeline and checkpoints do not wait for the job.
    const [jobResult, ...others] = await Promise.allSettled(
      [gf.json(base), loadMetrics(), loadSamples(), loadCheckpoints(), loadLogs()]);
    if (jobResult.status === "rejected") {
      const error = jobResult.reason;
      if (error.status === 404) return notFound();
      gf.showError($("job-error"), error);
      pollTimer = setTimeout(refresh, POLL_MS * 2);
      return;
    }
    const previous = job ? job.status : null;
    showJob(jobResult.value);
    // A failure of one part leaves the others shown.
    const failed = others.find((r) => r.status === "rejected");
    gf.showError($("job-error"), failed ? failed.reason : null);
    if (!gf.isActive(job.status) && (previous === null || gf.isActive(previous))) {
      logTail = 2;
      tailLogs();
    }
    if (previous && gf.isActive(previous) && !gf.isActive(job.status)) {
      // It has just ended: the listings read alongside may predate its last grid and checkpoint.
      pollTimer = setTimeout(refresh, 0);
      return;
    }
    root.dataset.loaded = job.status;  // tests and the benchmark wait on this
    if (!performance.getEntriesByName("ganforge:loaded").length) performance.mark("ganforge:loaded");  // first full load
    schedule();
  }

  window.addEventListener("gf-api-key", () => { resetLogs(); refresh(); });
  refresh();
})();
