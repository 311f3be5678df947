// The submit page: a JSON spec editor prefilled from the presets (GET /v1/presets), POST
// /v1/jobs, and the API's validation errors shown next to the line of the field they name.
"use strict";

(function submitPage() {
  const $ = (id) => document.getElementById(id);
  const editor = $("spec");
  const gutter = $("spec-gutter");
  const notes = $("spec-notes");
  let presets = [];
  let marks = [];  // [{line, field, problem}] of the last refused submission

  // ---- where each field sits in the text ----------------------------------------------------------
  // A small JSON scanner: the line of every object key and array element, by dotted path
  // ("train.batch_size", "model.hidden_g.1"), the same paths the API names in its details.
  function fieldLines(text) {
    const lines = new Map();
    const stack = [];
    let line = 1;
    const top = () => stack[stack.length - 1];
    const here = () => {
      const f = top();
      if (!f) return [];
      return f.type === "obj" ? [...f.path, f.key] : [...f.path, String(f.index)];
    };
    const valueStarts = () => {
      const f = top();
      if (f && f.type === "arr" && !f.seen) {
        f.seen = true;
        lines.set(here().join("."), line);
      }
    };
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (c === "\n") { line++; continue; }
      if (c === " " || c === "\t" || c === "\r" || c === ":") continue;
      if (c === '"') {
        let j = i + 1;
        let s = "";
        while (j < text.length && text[j] !== '"') {
          if (text[j] === "\\") { s += text[j + 1] || ""; j += 2; continue; }
          if (text[j] === "\n") line++;
          s += text[j++];
        }
        const f = top();
        if (f && f.type === "obj" && f.expectKey) {
          f.key = s;
          f.expectKey = false;
          lines.set([...f.path, s].join("."), line);
        } else {
          valueStarts();
        }
        i = j;
        continue;
      }
      if (c === "{" || c === "[") {
        valueStarts();
        stack.push(c === "{" ? { type: "obj", path: here(), expectKey: true, key: null }
          : { type: "arr", path: here(), index: 0, seen: false });
        continue;
      }
      if (c === "}" || c === "]") { stack.pop(); continue; }
      if (c === ",") {
        const f = top();
        if (f && f.type === "obj") f.expectKey = true;
        if (f && f.type === "arr") { f.index++; f.seen = false; }
        continue;
      }
      valueStarts();  // a number, true, false or null: skip to its end
      while (i + 1 < text.length && !",]}\n \t\r".includes(text[i + 1])) i++;
    }
    return lines;
  }

  // The line of a field, else of its nearest parent in the text (a missing field), else line 1.
  function lineOf(field, lines) {
    const parts = field === "(root)" ? [] : field.split(".");
    while (parts.length) {
      const found = lines.get(parts.join("."));
      if (found) return found;
      parts.pop();
    }
    return 1;
  }

  // ---- gutter and notes -----------------------------------------------------------------------
  function metrics() {
    const style = getComputedStyle(editor);
    return { lineHeight: parseFloat(style.lineHeight), padTop: parseFloat(style.paddingTop) };
  }

  function render() {
    const count = editor.value.split("\n").length;
    const byLine = new Map();
    for (const m of marks) byLine.set(m.line, [...(byLine.get(m.line) || []), m]);
    const numbers = [];
    for (let n = 1; n <= count; n++) {
      numbers.push(gf.el("div", { class: byLine.has(n) ? "error-line" : null, "data-line": n, text: n }));
    }
    gutter.replaceChildren(...numbers);
    const { lineHeight, padTop } = metrics();
    // The notes sit in an inner layer that scrolls with the text; the column itself stays put.
    notes.replaceChildren(gf.el("div", { class: "notes-layer" }, ...[...byLine.entries()].map(([line, items]) => gf.el("div", {
      class: "note", "data-line": line, "data-field": items.map((m) => m.field).join(" "),
      style: `top:${padTop + (line - 1) * lineHeight}px`,
      text: items.map((m) => `${m.field}: ${m.problem}`).join("; "),
    }))));
    syncScroll();
  }

  function syncScroll() {
    gutter.scrollTop = editor.scrollTop;
    const layer = notes.firstElementChild;
    if (layer) layer.style.transform = `translateY(${-editor.scrollTop}px)`;
  }

  function showErrors(message, details) {
    const box = $("spec-errors");
    const lines = fieldLines(editor.value);
    marks = details.map((d) => ({ field: d.field, problem: d.problem, line: lineOf(d.field, lines) }));
    $("spec-error-message").textContent = message;
    $("spec-error-list").replaceChildren(...marks.map((m) => {
      const item = gf.el("li", { "data-field": m.field },
        gf.el("a", { href: "#", class: "mono", text: m.field }), ` (line ${m.line}): ${m.problem}`);
      item.querySelector("a").addEventListener("click", (event) => { event.preventDefault(); goToLine(m.line); });
      return item;
    }));
    box.hidden = !message && !marks.length;
    render();
    if (marks.length) goToLine(marks[0].line, false);
  }

  function goToLine(line, focus = true) {
    const starts = [0];
    const text = editor.value;
    for (let i = 0; i < text.length; i++) if (text[i] === "\n") starts.push(i + 1);
    const start = starts[line - 1] || 0;
    const end = (starts[line] || text.length + 1) - 1;
    const { lineHeight } = metrics();
    editor.scrollTop = Math.max(0, (line - 3) * lineHeight);
    if (focus) {
      editor.focus();
      editor.setSelectionRange(start, end);
    }
    syncScroll();
  }

  function clearErrors() {
    marks = [];
    $("spec-errors").hidden = true;
    render();
  }

  // ---- presets and submit -------------------------------------------------------------------
  function usePreset(name) {
    const preset = presets.find((p) => p.name === name);
    if (!preset) return;
    editor.value = JSON.stringify(preset.spec, null, 2) + "\n";
    clearErrors();
  }

  async function loadPresets() {
    try {
      presets = (await gf.json("/v1/presets")).items;
    } catch (error) {
      $("submit-state").textContent = "presets unavailable: " + error.message;
      presets = [];
    }
    const select = $("preset");
    select.replaceChildren(gf.el("option", { value: "", text: presets.length ? "— choose —" : "none" }),
      ...presets.map((p) => gf.el("option", { value: p.name, text: p.name })));
    const wanted = new URLSearchParams(location.search).get("preset");
    const first = presets.find((p) => p.name === wanted) || presets[0];
    if (first && !editor.value.trim()) {
      select.value = first.name;
      usePreset(first.name);
    }
  }

  async function submit() {
    const state = $("submit-state");
    const text = editor.value;
    try {
      JSON.parse(text);
    } catch (error) {
      // Caught here rather than by the API: the browser knows the position of the mistake.
      const at = /position (\d+)/.exec(error.message);
      const line = at ? text.slice(0, Number(at[1])).split("\n").length : 1;
      marks = [];
      showErrors("The spec is not valid JSON: " + error.message, []);
      marks = [{ line, field: "(json)", problem: error.message }];
      render();
      goToLine(line, false);
      return;
    }
    $("submit").disabled = true;
    state.textContent = "submitting…";
    try {
      const job = await gf.json("/v1/jobs", { method: "POST", json: text });
      state.textContent = "submitted";
      location.href = "/jobs/" + job.id;
    } catch (error) {
      state.textContent = "";
      showErrors(error.message, error.details);
    } finally {
      $("submit").disabled = false;
    }
  }

  // ---- uploaded datasets (POST /v1/datasets) -------------------------------------------------
  const ARCHIVE_TYPES = [[".tar.gz", "application/gzip"], [".tgz", "application/gzip"], [".zip", "application/zip"],
    [".tar", "application/x-tar"]];
  const FOLDER_PRESET = "dcgan-64-folder";  // a DCGAN at 64 px for a folder of RGB pictures
  let uploads = [];

  function describe(d) {
    const classes = d.classes && d.classes.length ? `, ${d.classes.length} classes (${d.classes.join(", ")})` : "";
    return `${d.name}: ${d.images} images, ${d.skipped} skipped of ${d.files} files${classes}, ` +
      `${(d.bytes / (1 << 20)).toFixed(1)} MiB · id ${d.id}`;
  }

  function showPicked() {
    const picked = uploads.find((d) => d.id === $("dataset-pick").value);
    $("dataset-info").textContent = picked ? describe(picked) : "";
    $("dataset-use").disabled = !picked;
  }

  async function loadUploads(select) {
    const pick = $("dataset-pick");
    try {
      uploads = (await gf.json("/v1/datasets?limit=200")).items;
    } catch (error) {
      uploads = [];
      $("dataset-info").textContent = "uploaded datasets unavailable: " + error.message;
    }
    pick.replaceChildren(gf.el("option", { value: "", text: uploads.length ? "— choose —" : "none yet" }),
      ...uploads.map((d) => gf.el("option", { value: d.id, text: `${d.name} (${d.images} images)` })));
    if (select) pick.value = select;
    showPicked();
  }

  async function upload(event) {
    event.preventDefault();
    const file = $("upload-file").files[0];
    const state = $("upload-state");
    gf.showError($("upload-error"), null);
    if (!file) { gf.showError($("upload-error"), new Error("choose an archive first")); return; }
    const type = ARCHIVE_TYPES.find(([suffix]) => file.name.toLowerCase().endsWith(suffix));
    if (!type) {
      gf.showError($("upload-error"), new Error(`${file.name} is not a .zip, .tar, .tar.gz or .tgz archive`));
      return;
    }
    const name = $("upload-name").value.trim() || file.name.replace(/\.(tar\.gz|tgz|zip|tar)$/i, "") || "dataset";
    $("upload").disabled = true;
    state.textContent = `uploading ${(file.size / (1 << 20)).toFixed(1)} MiB…`;
    try {
      const created = await gf.json("/v1/datasets?" + new URLSearchParams({ name }),
        { method: "POST", body: file, contentType: type[1] });
      state.textContent = "uploaded";
      await loadUploads(created.id);
    } catch (error) {
      state.textContent = "";
      // A refused archive's problem starts with its reason code (zip_bomb, unsafe_path, empty, ...).
      const reason = error.details && error.details.length ? error.details[0].problem.split(":")[0] : "";
      gf.showError($("upload-error"), new Error(reason ? `${error.message} [${reason}]` : error.message));
    } finally {
      $("upload").disabled = false;
    }
  }

  // The spec's dataset becomes the picked upload; a spec that is not an image_folder one starts
  // from the folder preset (when the deployment has it), since a 2-D or MNIST model would not fit.
  function useUpload() {
    const picked = uploads.find((d) => d.id === $("dataset-pick").value);
    if (!picked) return;
    let spec;
    try { spec = JSON.parse(editor.value); } catch (e) { spec = null; }
    if (!spec || !spec.dataset || spec.dataset.name !== "image_folder") {
      const preset = presets.find((p) => p.name === FOLDER_PRESET);
      // Without the preset: a DCGAN with the service's defaults (it takes RGB at 32, 64 and 128 px).
      spec = preset ? JSON.parse(JSON.stringify(preset.spec)) : { name: picked.name, model: { arch: "dcgan" } };
    }
    const before = spec.dataset && spec.dataset.name === "image_folder" ? spec.dataset : {};
    const dataset = { name: "image_folder", upload_id: picked.id, image_size: before.image_size || 64,
      channels: before.channels || 3, labels: before.labels || "none" };
    spec.dataset = dataset;
    editor.value = JSON.stringify(spec, null, 2) + "\n";
    clearErrors();
    $("submit-state").textContent = `dataset: ${picked.name}`;
  }

  $("upload-form").addEventListener("submit", upload);
  $("dataset-pick").addEventListener("change", showPicked);
  $("dataset-use").addEventListener("click", useUpload);
  loadUploads();

  $("preset").addEventListener("change", (event) => usePreset(event.target.value));
  $("submit").addEventListener("click", submit);
  editor.addEventListener("scroll", syncScroll);
  editor.addEventListener("input", () => { if (marks.length) clearErrors(); else render(); });
  editor.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") submit();
  });
  render();
  loadPresets();
})();
