// samadapt studio: the page. Plain JavaScript, no library: slices arrive as raw arrays from the
// server (image float32, labels uint8, in display orientation) and are drawn on one canvas.
"use strict";

const COLOURS = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]];
const S = {
  cases: [], classes: [], caseId: null, info: null, plane: "axial", index: 0, rows: 0, cols: 0,
  image: null, layers: {edits: null, prediction: null, reference: null}, candidate: null, points: [], box: null,
  version: 0, history: {}, zoom: 1, aspect: 1, panX: 0, panY: 0, tool: "brush", cls: 1, wl: [0, 1], range: [0, 1],
  saving: Promise.resolve(), lastPromptSeconds: null, polygon: [],
};
window.studioState = S;  // read by the browser tests
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");

function setStatus(text, state = "ready") { $("status").textContent = text; $("status").dataset.state = state; }
function colour(c) { return COLOURS[c % COLOURS.length]; }

async function api(path, options = {}) {
  const response = await fetch(path, {credentials: "same-origin", ...options});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return response;
}
async function arrayOf(path, type) {
  const response = await api(path);
  const buffer = await response.arrayBuffer();
  return {data: new type(buffer), rows: +response.headers.get("X-Rows"), cols: +response.headers.get("X-Cols"),
    version: response.headers.get("X-Version"), seconds: response.headers.get("X-Seconds")};
}
const enc = encodeURIComponent;
function caseUrl(rest) { return `/api/cases/${enc(S.caseId)}${rest}`; }

// ---------------------------------------------------------------------------------- listing
async function loadCases() {
  const listing = await (await api("/api/cases")).json();
  S.cases = listing.cases; S.classes = listing.classes;
  $("model").textContent = `${listing.model.name} at ${listing.model.image_size} px` +
    (listing.model.random_weights ? " — RANDOM weights: prompts mean nothing until trained weights are given" : "");
  const list = $("cases"); list.innerHTML = "";
  for (const c of S.cases) {
    const li = document.createElement("li");
    li.dataset.case = c.id;
    if (c.error) { li.className = "broken"; li.textContent = `${c.name}: ${c.error}`; }
    else { li.textContent = `${c.name} (${c.dims}, ${c.shape.join("×")})`; li.onclick = () => openCase(c.id); }
    list.appendChild(li);
  }
  const legend = $("legend"); legend.innerHTML = "";
  S.classes.forEach((name, i) => {
    const li = document.createElement("li"), [r, g, b] = colour(i + 1);
    li.innerHTML = `<span class="swatch" style="background:rgb(${r},${g},${b})"></span>${i + 1} ${name}`;
    li.dataset.cls = i + 1; li.onclick = () => selectClass(i + 1);
    legend.appendChild(li);
  });
  selectClass(S.cls);
}
function selectClass(c) {
  S.cls = c;
  for (const li of $("legend").children) li.classList.toggle("active", +li.dataset.cls === c);
}

async function openCase(id) {
  S.caseId = id;
  for (const li of $("cases").children) li.classList.toggle("active", li.dataset.case === id);
  S.info = await (await api(caseUrl(""))).json();
  S.version = S.info.version; S.history = {};
  S.range = S.info.window; S.wl = [...S.info.window];
  $("wl-low").value = 0; $("wl-high").value = 1000;
  for (const option of $("plane").options) option.disabled = !(option.value in S.info.planes);
  S.plane = "axial"; $("plane").value = "axial";
  $("propagate").disabled = S.info.dims !== "3d";
  setPlaneRange(Math.floor(S.info.planes.axial / 2));
  await loadSlice(true);
}
function setPlaneRange(index) {
  const count = S.info.planes[S.plane];
  $("slice").max = count - 1; $("slice").value = Math.min(index, count - 1); S.index = +$("slice").value;
  $("slice-label").textContent = S.index;
}

async function loadSlice(fit = false) {
  const where = `?plane=${S.plane}&index=${S.index}`, wanted = [S.caseId, S.plane, S.index].join("/");
  setStatus("loading slice…", "loading");
  const image = await arrayOf(caseUrl(`/image${where}`), Float32Array);
  const layers = {};
  await Promise.all(["edits", "prediction", "reference"].map(async (layer) => {
    try { layers[layer] = (await arrayOf(caseUrl(`/labels/${layer}${where}`), Uint8Array)); }
    catch (e) { layers[layer] = null; }
  }));
  if (wanted !== [S.caseId, S.plane, S.index].join("/")) return;  // a newer request took over
  S.image = image.data; S.rows = image.rows; S.cols = image.cols;
  const [rowMm, colMm] = S.info.pixel_mm[S.plane]; S.aspect = rowMm / colMm;  // true proportions
  for (const layer in layers) S.layers[layer] = layers[layer] ? layers[layer].data : null;
  if (layers.edits && layers.edits.version !== null) S.version = +layers.edits.version;
  S.candidate = null; S.points = []; S.box = null; S.polygon = []; $("accept").disabled = true;
  if (fit) fitView();
  draw();
  setStatus(`${S.info.name}: ${S.plane} slice ${S.index} of ${S.info.planes[S.plane]}` +
    (S.plane !== "axial" ? " (view only: edit on the axial plane)" : ""), "ready");
}

// ---------------------------------------------------------------------------------- drawing
function fitView() {
  const w = canvas.clientWidth, h = canvas.clientHeight;
  S.zoom = Math.min(w / S.cols, h / (S.rows * S.aspect)) * 0.95;
  S.panX = (w - S.cols * S.zoom) / 2; S.panY = (h - S.rows * S.aspect * S.zoom) / 2;
}
function sliceCanvas() {
  const off = document.createElement("canvas"); off.width = S.cols; off.height = S.rows;
  const octx = off.getContext("2d"), pixels = octx.createImageData(S.cols, S.rows), px = pixels.data;
  const [lo, hi] = S.wl, scale = 255 / Math.max(1e-6, hi - lo), alpha = +$("opacity").value / 100;
  const shown = ["reference", "prediction", "edits"].filter((l) => S.layers[l] && $(`show-${l}`).checked);
  for (let i = 0; i < S.image.length; i++) {
    let v = (S.image[i] - lo) * scale; v = v < 0 ? 0 : v > 255 ? 255 : v;
    let r = v, g = v, b = v;
    for (const layer of shown) {
      const c = S.layers[layer][i];
      if (c) { const [cr, cg, cb] = colour(c), a = layer === "edits" ? alpha : alpha * 0.7;
        r = r * (1 - a) + cr * a; g = g * (1 - a) + cg * a; b = b * (1 - a) + cb * a; }
    }
    if (S.candidate && S.candidate[i]) { r = r * 0.4 + 153; g = g * 0.4 + 153; b = b * 0.4; }
    px[4 * i] = r; px[4 * i + 1] = g; px[4 * i + 2] = b; px[4 * i + 3] = 255;
  }
  octx.putImageData(pixels, 0, 0);
  return off;
}
function draw() {
  const w = canvas.width = canvas.clientWidth, h = canvas.height = canvas.clientHeight;
  ctx.fillStyle = "#111"; ctx.fillRect(0, 0, w, h);
  if (!S.image) return;
  ctx.imageSmoothingEnabled = false;
  const ry = S.zoom * S.aspect;  // screen pixels per image row
  ctx.drawImage(sliceCanvas(), S.panX, S.panY, S.cols * S.zoom, S.rows * ry);
  for (const [row, col, label] of S.points) {
    ctx.fillStyle = label ? "#3f3" : "#f33";
    ctx.beginPath(); ctx.arc(S.panX + col * S.zoom, S.panY + row * ry, 5, 0, 2 * Math.PI); ctx.fill();
  }
  if (S.polygon.length) {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.beginPath();
    S.polygon.forEach(([row, col], i) => ctx[i ? "lineTo" : "moveTo"](S.panX + col * S.zoom, S.panY + row * ry));
    ctx.stroke();
  }
  if (S.box) {
    const [r0, c0, r1, c1] = S.box; ctx.strokeStyle = "#ff3"; ctx.lineWidth = 2;
    ctx.strokeRect(S.panX + c0 * S.zoom, S.panY + r0 * ry, (c1 - c0) * S.zoom, (r1 - r0) * ry);
  }
}
function toImage(event) {
  const rect = canvas.getBoundingClientRect();
  return [(event.clientY - rect.top - S.panY) / (S.zoom * S.aspect), (event.clientX - rect.left - S.panX) / S.zoom];
}

// ---------------------------------------------------------------------------------- editing
function editable() { return S.image && S.plane === "axial"; }
function historyOf() { const k = S.index; return S.history[k] = S.history[k] || {undo: [], redo: []}; }
function ensureEdits() { if (!S.layers.edits) S.layers.edits = new Uint8Array(S.rows * S.cols); }
function paint(row, col, value) {
  const radius = +$("brush").value / 2, r2 = radius * radius;
  for (let r = Math.floor(row - radius); r <= row + radius; r++) {
    for (let c = Math.floor(col - radius); c <= col + radius; c++) {
      if (r < 0 || c < 0 || r >= S.rows || c >= S.cols) continue;
      if ((r + 0.5 - row) ** 2 + (c + 0.5 - col) ** 2 <= r2) S.layers.edits[r * S.cols + c] = value;
    }
  }
}
function saveEdits() {
  const labels = S.layers.edits.slice(), index = S.index, caseId = S.caseId;
  S.saving = S.saving.then(async () => {
    setStatus("saving…", "saving");
    try {
      const response = await api(`/api/cases/${enc(caseId)}/edits?index=${index}&version=${S.version}`,
        {method: "PUT", body: labels, headers: {"Content-Type": "application/octet-stream"}});
      S.version = (await response.json()).version;
      setStatus(`saved slice ${index} (version ${S.version})`, "saved");
    } catch (error) {
      if (error.status === 409) {
        setStatus(`conflict: ${error.message}; reloaded the case's latest labels`, "conflict");
        S.info = await (await api(caseUrl(""))).json(); S.version = S.info.version; await loadSlice();
      } else setStatus(`not saved: ${error.message}`, "error");
    }
  });
  return S.saving;
}
function commitEdit(before) {
  const h = historyOf(); h.undo.push(before); h.redo = [];
  return saveEdits();
}
function undoRedo(from, to) {
  if (!editable()) return;
  const h = historyOf(); if (!h[from].length) return;
  ensureEdits(); h[to].push(S.layers.edits.slice()); S.layers.edits = h[from].pop();
  draw(); saveEdits();
}

function fillPolygon() {
  // Rasterise on a slice-sized canvas: a pixel is inside when its centre is (the canvas fill rule).
  const points = S.polygon; S.polygon = [];
  if (points.length < 3) { draw(); return; }
  const off = document.createElement("canvas"); off.width = S.cols; off.height = S.rows;
  const octx = off.getContext("2d"); octx.fillStyle = "#fff"; octx.beginPath();
  points.forEach(([row, col], i) => octx[i ? "lineTo" : "moveTo"](col, row));
  octx.closePath(); octx.fill();
  const inside = octx.getImageData(0, 0, S.cols, S.rows).data;
  ensureEdits(); const before = S.layers.edits.slice();
  for (let i = 0; i < S.rows * S.cols; i++) if (inside[4 * i + 3] >= 128) S.layers.edits[i] = S.cls;
  draw(); commitEdit(before);
}

async function prompt() {
  const body = JSON.stringify({index: S.index, points: S.points, box: S.box});
  setStatus("SAM2…", "prompting");
  try {
    const response = await api(caseUrl("/prompt"), {method: "POST", body, headers: {"Content-Type": "application/json"}});
    S.candidate = new Uint8Array(await response.arrayBuffer());
    S.lastPromptSeconds = +response.headers.get("X-Seconds");
    $("accept").disabled = false; draw();
    setStatus(`prompt mask: ${S.candidate.reduce((a, v) => a + v, 0)} pixels in ${(S.lastPromptSeconds * 1000).toFixed(0)} ms` +
      " — accept it to label it", "prompted");
  } catch (error) { setStatus(`prompt failed: ${error.message}`, "error"); }
}
function acceptMask(mask, asClasses) {
  if (!editable() || !mask) return;
  ensureEdits(); const before = S.layers.edits.slice();
  for (let i = 0; i < mask.length; i++) if (mask[i]) S.layers.edits[i] = asClasses ? mask[i] : S.cls;
  S.candidate = null; S.points = []; S.box = null; $("accept").disabled = true;
  draw(); return commitEdit(before);
}

let drag = null;
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (event) => {
  if (!S.image) return;
  const [row, col] = toImage(event);
  if (event.button !== 0 || S.tool === "pan") { drag = {kind: "pan", x: event.clientX, y: event.clientY}; return; }
  if (!editable()) { drag = {kind: "pan", x: event.clientX, y: event.clientY}; return; }
  if (S.tool === "brush" || S.tool === "eraser") {
    ensureEdits(); drag = {kind: "paint", before: S.layers.edits.slice()};
    paint(row, col, S.tool === "brush" ? S.cls : 0); draw();
  } else if (S.tool === "polygon") { S.polygon.push([row, col]); draw(); }
  else if (S.tool === "box") drag = {kind: "box", row, col};
  else { S.points.push([row, col, S.tool === "point-pos" ? 1 : 0]); draw(); prompt(); }
});
canvas.addEventListener("mousemove", (event) => {
  if (!drag) return;
  const [row, col] = toImage(event);
  if (drag.kind === "pan") { S.panX += event.clientX - drag.x; S.panY += event.clientY - drag.y; drag.x = event.clientX; drag.y = event.clientY; draw(); }
  else if (drag.kind === "paint") { paint(row, col, S.tool === "brush" ? S.cls : 0); draw(); }
  else if (drag.kind === "box") { S.box = [Math.min(drag.row, row), Math.min(drag.col, col), Math.max(drag.row, row), Math.max(drag.col, col)]; draw(); }
});
window.addEventListener("mouseup", () => {
  const done = drag; drag = null;
  if (!done) return;
  if (done.kind === "paint") commitEdit(done.before);
  else if (done.kind === "box" && S.box) prompt();
});
canvas.addEventListener("dblclick", () => { if (S.tool === "polygon" && editable()) fillPolygon(); });
canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  const rect = canvas.getBoundingClientRect(), x = event.clientX - rect.left, y = event.clientY - rect.top;
  const factor = event.deltaY < 0 ? 1.15 : 1 / 1.15;
  S.panX = x - (x - S.panX) * factor; S.panY = y - (y - S.panY) * factor; S.zoom *= factor; draw();
}, {passive: false});

// ---------------------------------------------------------------------------------- training
async function train() { await runJob("/api/train", "{}"); }
async function propagate() { await runJob(caseUrl("/propagate"), null); }
// Start a job (a training round or a propagation) and follow it until it ends, then reload the slice.
async function runJob(url, body) {
  try { await api(url, {method: "POST", body, headers: body ? {"Content-Type": "application/json"} : {}}); }
  catch (error) { showTraining({status: "failed", message: error.message, done: 0, total: 1}); return; }
  const events = new EventSource("/api/train/events");
  events.onmessage = async (message) => {
    const state = JSON.parse(message.data);
    showTraining(state);
    if (state.status !== "running") {
      events.close();
      if (S.caseId) { S.info = await (await api(caseUrl(""))).json(); await loadSlice(); }
    }
  };
}
function showTraining(state) {
  $("train-progress").max = Math.max(1, state.total); $("train-progress").value = state.done;
  $("train-status").textContent = `${state.status}${state.phase && state.phase !== state.status ? " — " + state.phase : ""}` +
    `${state.total ? ` ${state.done}/${state.total}` : ""}${state.message ? ": " + state.message : ""}`;
  $("train-status").dataset.status = state.status;
}
async function exportLabels() {
  try {
    const result = await (await api("/api/export", {method: "POST"})).json();
    $("export-status").textContent = `wrote ${result.labels.length} label and ${result.predictions.length} prediction files and ${result.dataset}`;
    $("export-status").dataset.status = "done";
  } catch (error) { $("export-status").textContent = `export failed: ${error.message}`; $("export-status").dataset.status = "failed"; }
}
async function upload(file) {
  try {
    const added = await (await api(`/api/upload?name=${enc(file.name)}`, {method: "POST", body: file})).json();
    await loadCases(); setStatus(added.error ? `${file.name}: ${added.error}` : `added ${file.name}`);
  } catch (error) { setStatus(`upload failed: ${error.message}`, "error"); }
}

// ---------------------------------------------------------------------------------- controls
for (const button of document.querySelectorAll("[data-tool]")) {
  button.onclick = () => { S.tool = button.dataset.tool;
    for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b === button); };
}
$("slice").oninput = () => { S.index = +$("slice").value; $("slice-label").textContent = S.index; loadSlice(); };
$("plane").onchange = () => { S.plane = $("plane").value; setPlaneRange(Math.floor(S.info.planes[S.plane] / 2)); loadSlice(true); };
for (const id of ["wl-low", "wl-high"]) {
  $(id).oninput = () => { const [lo, hi] = S.range, at = (v) => lo + (hi - lo) * v / 1000;
    S.wl = [at(+$("wl-low").value), at(+$("wl-high").value)]; draw(); };
}
for (const id of ["opacity", "show-reference", "show-prediction", "show-edits"]) $(id).oninput = draw;
$("undo").onclick = () => undoRedo("undo", "redo");
$("redo").onclick = () => undoRedo("redo", "undo");
$("accept").onclick = () => acceptMask(S.candidate, false);
$("accept-prediction").onclick = () => acceptMask(S.layers.prediction, true);
$("clear-prompt").onclick = () => { S.candidate = null; S.points = []; S.box = null; $("accept").disabled = true; draw(); };
$("train").onclick = train;
$("propagate").onclick = propagate;
$("export").onclick = exportLabels;
$("upload").onchange = () => { if ($("upload").files.length) upload($("upload").files[0]); };
window.addEventListener("keydown", (e) => {
  if (e.ctrlKey && e.key === "z") undoRedo("undo", "redo");
  if (e.ctrlKey && e.key === "y") undoRedo("redo", "undo");
});
window.addEventListener("resize", draw);

loadCases().then(() => {
  const first = S.cases.find((c) => !c.error);
  if (first) openCase(first.id); else setStatus("no readable image in the folder", "ready");
}).catch((error) => setStatus(`cannot load the cases: ${error.message}`, "error"));
